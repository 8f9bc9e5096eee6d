// Fills an embedded store for the scale scenario, through Hermod's own service core and
// LevelDB store (src/pubsub/service.ts, src/store/level.ts) in this process: XMPP would only
// make the fill slower, and the point is the store that results. Then times the scale
// scenario's items requests in-process, through Hermod's own wire handlers (parse → service →
// store → result element → XML text): Hermod's share of a round trip, without the server hop.
// Run as a child process:
//   node --import tsx bench/scale-fill.ts DATADIR NODES ITEMS BIG_NODE_ITEMS OWNER [PAGE_SIZE] [--direct]
// Prints JSON lines: progress, then {"done":true,...}.
// --direct (DIRECT STORE FILL, for repeating the restart measurement in a minute or two): nodes
// still through the service; the items straight into the store, a node's items in batches of
// up to 1 000 (KvStore.publishItems): the same keys and values as publishing one by one, but not
// the service's per-publish work, so its items/s are not publish throughput.

import path from 'node:path';
import { nodeItemLimit, NO_LIMITS } from '../src/pubsub/limits.ts';
import { DEFAULT_NODE_CONFIG } from '../src/pubsub/node-config.ts';
import { ARCHIVE_LIMIT, PubsubService } from '../src/pubsub/service.ts';
import type { Item } from '../src/pubsub/types.ts';
import { LevelStore } from '../src/store/level.ts';
import { routeKey } from '../src/xmpp/request.ts';
import { pubsubRoutes } from '../src/xmpp/pubsub-handlers.ts';
import { parse, type Element } from 'ltx';
import { payload } from './lib/loadgen.ts';
import { percentiles } from './lib/stats.ts';

const direct = process.argv.includes('--direct');
const [dataDir, nodesArg, itemsArg, bigArg, owner, pageArg = '10'] = process.argv.slice(2).filter((a) => a !== '--direct');
if (!dataDir || !nodesArg || !itemsArg || !bigArg || !owner) {
  process.stderr.write('usage: scale-fill.ts DATADIR NODES ITEMS BIG_NODE_ITEMS OWNER\n');
  process.exit(2);
}
const nodes = Number(nodesArg);
const items = Number(itemsArg);
const bigItems = Math.min(Number(bigArg), items);
const CONCURRENCY = 8;
const out = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

const store = new LevelStore(path.join(dataDir, 'store'));
await store.open();
const service = new PubsubService({ store, notifier: () => {}, mayCreateNodes: () => true, cacheNodes: 1000 });

async function pool(n: number, job: (i: number) => Promise<unknown>, what: string): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  let reported = t0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        await job(next++);
        const now = performance.now();
        if (now - reported > 5000) {
          reported = now;
          out({ progress: what, done: next, of: n, perSec: Math.round(next / ((now - t0) / 1000)) });
        }
      }
    }),
  );
  return performance.now() - t0;
}

const nodeId = (i: number): string => (i === 0 ? 'big' : `n${i.toString().padStart(6, '0')}`);
const nodesMs = await pool(nodes, (i) => service.create(owner, nodeId(i)), 'nodes');
out({ progress: 'nodes', done: nodes, of: nodes });
const small = Math.max(1, nodes - 1);
/** Item i as the service would store it (id, payload, publisher). */
const itemOf = (i: number): Item => ({ id: `i${i}`, payload: payload(i), publisher: owner, published: Date.now() });
const itemsMs = direct
  ? await directFill()
  : await pool(
      items,
      (i) => {
        const node = i < bigItems ? 'big' : nodeId(1 + ((i - bigItems) % small));
        return service.publish(owner, node, { item: { id: `i${i}`, payload: payload(i) } });
      },
      'items',
    );

/** The same items in the same nodes and order as the service fill, a node at a time through KvStore.publishItems. */
async function directFill(): Promise<number> {
  const options = { keep: nodeItemLimit(DEFAULT_NODE_CONFIG, NO_LIMITS), archive: { keep: ARCHIVE_LIMIT } };
  const CHUNK = 1000;
  const t0 = performance.now();
  for (let from = 0; from < bigItems; from += CHUNK) {
    await store.publishItems('big', Array.from({ length: Math.min(CHUNK, bigItems - from) }, (_, j) => itemOf(from + j)), options);
  }
  // Item i >= bigItems goes to small node 1 + ((i - bigItems) % small), as in the service fill.
  await pool(
    small,
    (k) => {
      const batch: Item[] = [];
      for (let i = bigItems + k; i < items; i += small) batch.push(itemOf(i));
      return batch.length > 0 ? store.publishItems(nodeId(1 + k), batch, options) : Promise.resolve();
    },
    'items (direct, by node)',
  );
  return performance.now() - t0;
}
// In-process timings of the items requests the scale scenario sends over XMPP.
const handle = pubsubRoutes(service).get(routeKey('get', 'http://jabber.org/protocol/pubsub', 'pubsub'));
const inProcess: Array<{ request: string; bytes: number; p50: number; p99: number }> = [];
if (handle) {
  const page = Number(pageArg);
  const big = Math.max(1, bigItems);
  const rsm = (set: string): string => `<items node='big'/><set xmlns='http://jabber.org/protocol/rsm'><max>${page}</max>${set}</set>`;
  const requests: Array<[string, (i: number) => string]> = [
    ...[1, 10, 100, 1000].map((m): [string, (i: number) => string] => [`max_items=${m}`, () => `<items node='big' max_items='${m}'/>`]),
    [`RSM first page (${page})`, () => rsm('')],
    [`RSM page (${page}) after a random item`, (i) => rsm(`<after>i${(i * 7919 + 13) % big}</after>`)],
    [`RSM page (${page}) at index ${Math.floor(big / 2)}`, () => rsm(`<index>${Math.floor(big / 2)}</index>`)],
    [`RSM last page (${page})`, () => rsm('<before/>')],
    ['by id', (i) => `<items node='big'><item id='i${(i * 7919) % big}'/></items>`],
  ];
  for (const [name, body] of requests) {
    const ms: number[] = [];
    let bytes = 0;
    for (let i = 0; i < 20; i++) {
      const child = parse(`<pubsub xmlns='http://jabber.org/protocol/pubsub'>${body(i)}</pubsub>`) as Element;
      const t = performance.now();
      try {
        const result = await handle({ type: 'get', from: `${owner}/bench`, to: 'scale', child });
        bytes = result ? result.toString().length : 0;
      } catch {
        bytes = -1; // not supported by this Hermod
      }
      ms.push(performance.now() - t);
    }
    const p = percentiles(ms);
    inProcess.push({ request: name, bytes, p50: p.p50, p99: p.p99 });
  }
}
await (service as { close?: () => Promise<void> }).close?.();
await store.close();
out({ done: true, fill: direct ? 'direct' : 'service', nodes, items, bigItems, nodesMs, itemsMs, nodesPerSec: nodes / (nodesMs / 1000), itemsPerSec: items / (itemsMs / 1000), inProcess });
