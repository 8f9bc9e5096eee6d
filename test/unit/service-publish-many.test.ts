// PubsubService.publishMany: several items to one node under one lock and one store write, with
// the results of the same publish() calls in order — outcomes per request (a refused one does
// not stop the others), the node's items and archive, and the notifications in order — and
// refusals that concern the whole batch rejecting it with nothing written or notified.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService, type PublishRequest, type ServiceOptions } from '../../src/pubsub/service.ts';
import type { NodeConfig, Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';

const OWNER = 'owner@a.test/desk';
const BOB = 'bob@b.test/phone';
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const backends: Array<[string, () => Promise<Store>]> = [
  ['memory', async () => new MemoryStore()],
  [
    'LevelDB',
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'hermod-pubmany-'));
      dirs.push(dir);
      const store = new LevelStore(dir);
      await store.open();
      return store;
    },
  ],
];

/** A store that counts item writes and can be made to fail them, as a full disk would. */
function watched(inner: Store): { store: Store; writes: () => number; fail: (on: boolean) => void } {
  let writes = 0;
  let failing = false;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      if (prop !== 'publishItem' && prop !== 'publishMany') return value.bind(target);
      return (...args: unknown[]) => {
        writes++;
        return failing ? Promise.reject(new Error('ENOSPC: no space left on device')) : (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, writes: () => writes, fail: (on) => (failing = on) };
}

interface Site {
  service: PubsubService;
  events: Array<{ event: ServiceEvent; to: string[] }>;
  writes: () => number;
  fail: (on: boolean) => void;
  store: Store;
}

async function site(makeStore: () => Promise<Store>, more: Partial<ServiceOptions> = {}): Promise<Site> {
  const events: Site['events'] = [];
  const { store, writes, fail } = watched(await makeStore());
  let n = 0;
  const service = new PubsubService({
    store,
    mayCreateNodes: (bare) => bare.endsWith('@a.test'),
    notifier: (event: ServiceEvent, recipients: Recipient[]) => events.push({ event, to: recipients.map((r) => r.jid) }),
    newId: () => `gen${++n}`,
    now: () => 5_000_000,
    ...more,
  });
  return { service, events, writes, fail, store };
}

/** A node `id` with `config`, BOB subscribed. */
async function nodeOn(s: Site, id: string, config: Partial<NodeConfig>): Promise<void> {
  await s.service.create(OWNER, id, { accessModel: 'open', ...config });
  await s.service.subscribe(BOB, id, BOB);
  s.events.length = 0;
}

const req = (id: string | undefined, body = id ?? 'x'): PublishRequest => ({ item: { ...(id ? { id } : {}), payload: `<p xmlns="x">${body}</p>` } });
const outcomeOf = (p: Promise<string | undefined>): Promise<unknown> => p.then((id) => ({ id }), (e: unknown) => ({ error: (e as PubsubError).condition }));

for (const [name, makeStore] of backends) {
  describe(`publishMany (${name} store)`, () => {
    /** The same requests through publishMany on one service and publish() one by one on another: same outcomes, items, archive, notifications. */
    async function same(config: Partial<NodeConfig>, requests: PublishRequest[], more: Partial<ServiceOptions> = {}): Promise<Site> {
      const many = await site(makeStore, more);
      const one = await site(makeStore, more);
      for (const s of [many, one]) await nodeOn(s, 'n', config);
      const batched = (await many.service.publishMany(OWNER, 'n', requests)).map((o) => ('error' in o ? { error: o.error.condition } : o));
      const single: unknown[] = [];
      for (const r of requests) single.push(await outcomeOf(one.service.publish(OWNER, 'n', r)));
      assert.deepEqual(batched, single, 'the same outcome per request');
      if (config.persistItems !== false) {
        assert.deepEqual(await many.service.getItems(OWNER, 'n'), await one.service.getItems(OWNER, 'n'), 'the same items, in the same order');
        assert.deepEqual(await many.service.queryArchive(OWNER, 'n', {}), await one.service.queryArchive(OWNER, 'n', {}), 'the same archive');
      }
      assert.deepEqual(many.events, one.events, 'the same notifications, in order');
      assert.ok(many.writes() <= 1, `one store write for the batch, not ${many.writes()}`);
      return many;
    }

    it('a mixed batch: replacements, an id given twice, generated ids, refusals among accepted items, max_items eviction', async () => {
      const s = await same({ maxItems: 3, maxPayloadSize: 40 }, [
        req('a'),
        req('b'),
        req('a', 'a again'),
        req('c', 'c'.repeat(50)), // payload-too-big
        req(undefined, 'generated'),
        { ...req('d'), preconditions: { maxItems: 9 } }, // precondition-not-met
        { item: { id: 'e' } }, // payload-required
        req('f'),
      ]);
      assert.deepEqual((await s.service.getItems(OWNER, 'n')).map((i) => i.id), ['a', 'gen2', 'f']);
      assert.deepEqual(s.events.map((e) => [e.event.kind, e.event.kind === 'items' ? e.event.item?.id : undefined, e.to]), ['a', 'b', 'a', 'gen2', 'f'].map((id) => ['items', id, [BOB]]));
    });

    it('publish_node_full=reject counts the items the batch accepted before each request', async () => {
      const s = await same({ maxItems: 2, publishNodeFull: 'reject' }, [req('x'), req('y'), req('z'), req('x', 'x2'), req(undefined)]);
      assert.deepEqual((await s.service.getItems(OWNER, 'n')).map((i) => [i.id, i.payload]), [['y', '<p xmlns="x">y</p>'], ['x', '<p xmlns="x">x2</p>']]);
    });

    it('a transient notification-only node: each publish without an item notifies, one with an item is item-forbidden', async () => {
      await same({ persistItems: false, deliverPayloads: false }, [{}, req('a'), {}]);
    });

    it('a publish rate: the requests beyond it are rate-limited, the others published', async () => {
      const many = await site(makeStore, { limits: { publishRate: { perSecond: 1, burst: 2 } } });
      await nodeOn(many, 'n', { publishModel: 'open' });
      const outcomes = await many.service.publishMany(BOB, 'n', [req('a'), req('b'), req('c')]);
      assert.deepEqual(outcomes.map((o) => ('error' in o ? o.error.condition : o.id)), ['a', 'b', 'rate-limited']);
      assert.deepEqual((await many.service.getItems(OWNER, 'n')).map((i) => i.id), ['a', 'b']);
    });

    it('what concerns the whole batch rejects it: nothing written, nobody notified', async () => {
      const s = await site(makeStore);
      await nodeOn(s, 'n', {});
      await assert.rejects(s.service.publishMany(BOB, 'n', [req('a'), req('b')]), (e: unknown) => e instanceof PubsubError && e.condition === 'forbidden');
      await assert.rejects(s.service.publishMany(OWNER, 'nope', [req('a')]), (e: unknown) => e instanceof PubsubError && e.condition === 'item-not-found');
      s.fail(true);
      await assert.rejects(s.service.publishMany(OWNER, 'n', [req('a'), req('b')]), /ENOSPC/);
      s.fail(false);
      assert.deepEqual([await s.service.getItems(OWNER, 'n'), s.events], [[], []]);
      assert.deepEqual((await s.service.publishMany(OWNER, 'n', [req('a'), req('b')])).map((o) => ('id' in o ? o.id : o.error.condition)), ['a', 'b'], 'serving again once the store recovers');
      assert.deepEqual(await s.service.publishMany(OWNER, 'n', []), [], 'an empty batch');
    });
  });
}
