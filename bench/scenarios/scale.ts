// scale: Hermod alone with a big embedded store. Fill N nodes / M items (one "big" node holds a
// share of them), then run `hermod start` on it as its own process and measure: store size on
// disk, restart-to-serving time (spawn → first successful items request), RSS idle and after
// touching many nodes, items retrieval latency on the big node (max_items, RSM pages: first,
// after a random item, at an index, last, and walking page after page), by id, from many small
// nodes, and the publish round trip into the big node.

import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ServerInfo } from '../../src/devenv/index.ts';
import { NS_PUBSUB, publishXml, reserveSeqs } from '../lib/loadgen.ts';

const NS_RSM = 'http://jabber.org/protocol/rsm';
import { memoryMiB, sleep, startBenchHermod, startScript, type Proc } from '../lib/procs.ts';
import type { RawClient } from '../lib/raw-xmpp.ts';
import { fmtInt, fmtMs, mdTable, percentiles, type Percentiles } from '../lib/stats.ts';
import { barChart } from '../lib/svg.ts';

export interface ScaleParams {
  nodes: number;
  items: number;
  bigNodeItems: number;
  maxItems: number[];
  /** RSM page size. */
  pageSize: number;
  /** Consecutive RSM pages walked from the start. */
  walkPages: number;
  reps: number;
  smallNodeReads: number;
  publishes: number;
  restarts: number;
  fillTimeoutMs: number;
  /** 'service' (default): every item published through the service core; 'direct': the same store written a node at a time (scale-fill.ts --direct). */
  fill?: 'service' | 'direct';
}

export interface ScaleResult {
  params: ScaleParams;
  fill: Record<string, unknown>;
  storeBytes: number;
  restartToServingMs: number[];
  stopMs: number[];
  rssMiB: { idle: number; afterReads: number; peak: number };
  /** Request round trips, sequential (client → Prosody → Hermod → Prosody → client). */
  requests: Array<{ name: string; short: string; bytes: number; latency: Percentiles }>;
  rsmSupported: boolean;
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirBytes(p);
    else total += (await stat(p)).size;
  }
  return total;
}

async function timed(n: number, f: (i: number) => Promise<unknown>): Promise<Percentiles> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await f(i);
    ms.push(performance.now() - t);
  }
  return percentiles(ms);
}

export async function runScale(
  p: ScaleParams,
  ctx: { dir: string; server: ServerInfo; component: { jid: string; secret: string }; client: RawClient; owner: string; log: (m: string) => void },
): Promise<ScaleResult> {
  const dataDir = path.join(ctx.dir, 'scale-data');
  const { client, component } = ctx;
  ctx.log(`scale: filling ${p.nodes} nodes, ${p.items} items (${p.bigNodeItems} in node 'big')`);
  const filler = await startScript('scale-fill', 'scale-fill.ts', [dataDir, String(p.nodes), String(p.items), String(p.bigNodeItems), ctx.owner, String(p.pageSize), ...(p.fill === 'direct' ? ['--direct'] : [])], ctx.dir, 60_000);
  const deadline = Date.now() + p.fillTimeoutMs;
  let fill: Record<string, unknown> | undefined;
  let shown = 0;
  for (;;) {
    fill = filler.lines.find((l) => l.done === true);
    if (fill) break;
    for (; shown < filler.lines.length; shown++) ctx.log(`scale: fill ${JSON.stringify(filler.lines[shown])}`);
    if (filler.exited()) throw new Error(`scale filler exited without finishing; see ${filler.logFile}`);
    if (Date.now() > deadline) {
      await filler.stop();
      throw new Error(`scale filler did not finish within ${p.fillTimeoutMs} ms`);
    }
    await sleep(250);
  }
  await filler.stop();
  ctx.log(`scale: filled: ${JSON.stringify(fill)}`);
  const storeBytes = await dirBytes(dataDir);

  let hermod: (Proc & { startedAt: number }) | undefined;
  const items = (node: string, extra = '', children = ''): Promise<string> =>
    client.iq('get', component.jid, `<pubsub xmlns='${NS_PUBSUB}'><items node='${node}'${extra}>${children}</items></pubsub>`, 60_000);
  const start = async (): Promise<number> => {
    hermod = await startBenchHermod({
      name: 'hermod-scale',
      dir: ctx.dir,
      server: { componentJid: component.jid, componentSecret: component.secret, componentService: ctx.server.componentService },
      dataDir,
      waitOnline: false,
    });
    const t0 = hermod.startedAt;
    const until = Date.now() + 30_000;
    for (;;) {
      try {
        await client.iq('get', component.jid, `<pubsub xmlns='${NS_PUBSUB}'><items node='big' max_items='1'/></pubsub>`, 5000);
        return performance.now() - t0;
      } catch (err) {
        if (hermod.exited()) throw new Error(`hermod (scale) exited while starting; see ${hermod.logFile}`);
        if (Date.now() > until) throw new Error(`hermod (scale) not serving within 30 s: ${String(err)}`);
        await sleep(20);
      }
    }
  };
  const restartToServingMs: number[] = [];
  const stopMs: number[] = [];
  try {
    restartToServingMs.push(await start());
    ctx.log(`scale: serving ${Math.round(restartToServingMs[0] as number)} ms after spawn`);
    await sleep(500);
    const idle = memoryMiB(hermod!.pid).rss;
    const requests: ScaleResult['requests'] = [];
    const measure = async (name: string, short: string, n: number, f: (i: number) => Promise<string>): Promise<void> => {
      let bytes = 0;
      const latency = await timed(n, async (i) => {
        bytes = (await f(i)).length;
      });
      requests.push({ name, short, bytes, latency });
      ctx.log(`scale: ${name}: p50 ${latency.p50.toFixed(1)} ms, p99 ${latency.p99.toFixed(1)} ms`);
    };
    const bigCount = Math.min(p.bigNodeItems, p.items);
    for (const m of p.maxItems) await measure(`items, max_items=${m} on 'big'`, `max_items\n${m}`, p.reps, () => items('big', ` max_items='${m}'`));
    // RSM (XEP-0059): a <set/> beside <items/>; a service without RSM would ignore it.
    const rsm = (set: string): Promise<string> =>
      client.iq('get', component.jid, `<pubsub xmlns='${NS_PUBSUB}'><items node='big'/><set xmlns='${NS_RSM}'><max>${p.pageSize}</max>${set}</set></pubsub>`, 60_000);
    const probe = await rsm('');
    const rsmSupported = probe.includes(NS_RSM);
    if (rsmSupported) {
      const P = p.pageSize;
      await measure(`RSM first page (${P}) of 'big'`, `RSM\nfirst`, p.reps, () => rsm(''));
      await measure(`RSM page (${P}) after a random item of 'big'`, `RSM after\nrandom`, p.reps, (i) => rsm(`<after>i${(i * 7919 + 13) % bigCount}</after>`));
      await measure(`RSM page (${P}) at index ${Math.floor(bigCount / 2)} of 'big'`, `RSM\nmid index`, p.reps, () => rsm(`<index>${Math.floor(bigCount / 2)}</index>`));
      await measure(`RSM last page (${P}) of 'big'`, `RSM\nlast`, p.reps, () => rsm('<before/>'));
      let last = '';
      await measure(`RSM walk: ${p.walkPages} consecutive pages (${P}) from the start`, `RSM\nwalk`, p.walkPages, async () => {
        const x = await rsm(last ? `<after>${last}</after>` : '');
        last = /<last>([^<]*)<\/last>/.exec(x)?.[1] ?? '';
        return x;
      });
    }
    await measure(`items by id on 'big'`, 'by id', p.reps, (i) => items('big', '', `<item id='i${(i * 7919) % bigCount}'/>`));
    const small = Math.max(1, p.nodes - 1);
    await measure('all items of a random small node (not cached)', 'small node', p.smallNodeReads, (i) => items(`n${(1 + ((i * 104729) % small)).toString().padStart(6, '0')}`));
    const afterReads = memoryMiB(hermod!.pid).rss;
    const base = reserveSeqs(p.publishes);
    await measure(`publish into 'big'`, 'publish', p.publishes, (i) => client.iq('set', component.jid, publishXml('big', base + i), 30_000));
    const peak = memoryMiB(hermod!.pid).peak;
    for (let r = 0; r < p.restarts; r++) {
      const t = performance.now();
      await hermod!.stop();
      stopMs.push(performance.now() - t);
      hermod = undefined;
      restartToServingMs.push(await start());
      ctx.log(`scale: restart ${r + 1}: serving ${Math.round(restartToServingMs.at(-1) as number)} ms after spawn`);
    }
    return { params: p, fill, storeBytes, restartToServingMs, stopMs, rssMiB: { idle, afterReads, peak }, requests, rsmSupported };
  } finally {
    await hermod?.stop();
  }
}

export function scaleReport(r: ScaleResult): { md: string; svg: string } {
  const p = r.params;
  const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const fill = r.fill as { itemsPerSec?: number; nodesPerSec?: number; itemsMs?: number; nodesMs?: number };
  const lines: string[] = [];
  lines.push('## Scale: Hermod alone with a big embedded store');
  lines.push('');
  lines.push(
    `${fmtInt(p.nodes)} nodes and ${fmtInt(p.items)} items (~420-byte Atom payloads), ${fmtInt(p.bigNodeItems)} of them in one node ('big'), ` +
      `the rest spread over the other nodes; ` +
      (p.fill === 'direct'
        ? `nodes created through Hermod's service core, items written straight into the LevelDB store a node at a time (direct fill, same layout; ${fmtInt(fill.itemsPerSec ?? NaN)} items/s is not publish throughput). `
        : `filled through Hermod's service core and LevelDB store in a separate process (${fmtInt(fill.nodesPerSec ?? NaN)} nodes/s, ${fmtInt(fill.itemsPerSec ?? NaN)} items/s). `) +
      `Hermod then runs as \`hermod start\` ` +
      'on that store; requests come from a client on Prosody (c2s → Prosody → component).',
  );
  lines.push('');
  const restarts = r.restartToServingMs;
  const rows: string[][] = [
    ['store on disk', mib(r.storeBytes), ''],
    ['restart to serving (spawn → first items result)', restarts.map((x) => `${fmtInt(x)} ms`).join(', '), 'target < 1 s (issue 14)'],
    ['clean stop (SIGTERM → exit)', r.stopMs.map((x) => `${fmtInt(x)} ms`).join(', ') || '–', ''],
    ['RSS idle after start', `${r.rssMiB.idle.toFixed(0)} MiB`, 'target < 1 GiB'],
    [`RSS after reading ${fmtInt(p.smallNodeReads)} small nodes`, `${r.rssMiB.afterReads.toFixed(0)} MiB`, ''],
    ['peak RSS', `${r.rssMiB.peak.toFixed(0)} MiB`, ''],
  ];
  lines.push(mdTable(['measure', 'value', 'note'], rows, ['l', 'r', 'l']));
  lines.push('');
  lines.push('Request round trips (client → Prosody → Hermod → Prosody → client), one at a time:');
  lines.push('');
  lines.push(
    mdTable(
      ['request', 'reply size', 'p50 (ms)', 'p99 (ms)', 'n'],
      r.requests.map((q) => [q.name, q.bytes > 2048 ? `${(q.bytes / 1024).toFixed(0)} KiB` : `${q.bytes} B`, fmtMs(q.latency.p50), fmtMs(q.latency.p99), `${q.latency.n}`]),
      ['l', 'r', 'r', 'r', 'r'],
    ),
  );
  lines.push('');
  const inProcess = (r.fill as { inProcess?: Array<{ request: string; bytes: number; p50: number; p99: number }> }).inProcess ?? [];
  if (inProcess.length) {
    lines.push(
      "Hermod's own share, in-process on the same store (the same wire handler: parse → service → store → result → XML text; " +
        'no sockets, no server), 20 requests each:',
    );
    lines.push('');
    lines.push(
      mdTable(
        ['request', 'reply size', 'p50 (ms)', 'p99 (ms)'],
        inProcess.map((q) => [q.request, q.bytes < 0 ? 'not supported' : q.bytes > 2048 ? `${(q.bytes / 1024).toFixed(0)} KiB` : `${q.bytes} B`, fmtMs(q.p50), fmtMs(q.p99)]),
        ['l', 'r', 'r', 'r'],
      ),
    );
    lines.push('');
    lines.push(
      'Replies larger than 8 KiB pay about 40 ms more through Prosody: LuaSocket writes in 8 KiB steps and Prosody leaves Nagle\'s algorithm on ' +
        'by default (`network_settings = { nagle = false }` turns it off), so the tail of the reply waits for the client\'s delayed ACK.',
    );
    lines.push('');
  }
  if (!r.rsmSupported) lines.push('RSM (XEP-0059) is not supported by this Hermod: max_items is the only way to bound a reply.\n');
  const svg = barChart({
    title: `Scale: request latency with ${fmtInt(p.nodes)} nodes / ${fmtInt(p.items)} items`,
    subtitle: `store ${mib(r.storeBytes)}, RSS ${r.rssMiB.afterReads.toFixed(0)} MiB, restart to serving ${restarts.map((x) => fmtInt(x)).join(' / ')} ms`,
    yLabel: 'ms',
    groups: r.requests.map((q) => q.short),
    series: [
      { name: 'p50', values: r.requests.map((q) => q.latency.p50) },
      { name: 'p99', values: r.requests.map((q) => q.latency.p99) },
    ],
    log: true,
    width: Math.max(760, 70 * r.requests.length + 100),
  });
  return { md: lines.join('\n') + '\n', svg };
}
