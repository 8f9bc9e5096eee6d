// Store layouts: a LevelDB store written by an older Hermod (layout 1: no order counters, no
// timer index) opens, is upgraded once (logged) and serves everything it held; and the counted
// order index (src/store/order-index.ts) places positions right for sequence numbers spread
// over every level of its buckets.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DEFAULT_NODE_CONFIG } from '../../src/pubsub/node-config.ts';
import type { NodeRecord, Subscription } from '../../src/pubsub/types.ts';
import type { BatchOp } from '../../src/store/kv.ts';
import { LevelKv, LevelStore } from '../../src/store/level.ts';
import { applyDeltas, counterDeltas, orderKey, orderKeyAt, positionOf } from '../../src/store/order-index.ts';
import { archiveId } from '../../src/store/store.ts';

const root = mkdtempSync(path.join(tmpdir(), 'hermod-layout-'));
after(() => rmSync(root, { recursive: true, force: true }));
const k = (...parts: string[]): string => parts.join('\0');
const hex12 = (n: number): string => n.toString(16).padStart(12, '0');
const record = (id: string, config: Partial<NodeRecord['config']> = {}): NodeRecord => ({ id, config: { ...DEFAULT_NODE_CONFIG, ...config }, creator: 'alice@a.test', created: 1000 });

/**
 * Writes a store as layout 1 did (src/store/kv-store.ts before layout 2): node 'big' with 600
 * items of which some were retracted and one republished (so sequence numbers have gaps),
 * an archive, and node 'timed' with item expiry and a leased subscription.
 */
async function writeLayout1(location: string): Promise<{ order: string[] }> {
  const kv = new LevelKv(location);
  await kv.open();
  const ops: BatchOp[] = [];
  const put = (key: string, value: unknown): void => void ops.push({ type: 'put', key, value: typeof value === 'string' ? value : JSON.stringify(value) });
  put(k('n', 'big'), record('big'));
  put(k('a', 'big', 'alice@a.test'), 'owner');
  put(k('A', 'alice@a.test', 'big'), 'owner');
  const seqs = new Map<string, number>();
  let seq = 0;
  for (let i = 0; i < 600; i++) seqs.set(`i${i}`, ++seq);
  for (const gone of ['i3', 'i300', 'i301']) seqs.delete(gone);
  seqs.delete('i10');
  seqs.set('i10', ++seq); // republished: newest
  for (const [id, s] of seqs) {
    put(k('i', 'big', id), { seq: s, item: { id, payload: `<p xmlns='x'>${id}</p>`, publisher: 'alice@a.test', published: 2000 + s } });
    put(k('o', 'big', hex12(s)), id);
  }
  put(k('m', 'big'), { seq, count: seqs.size });
  const ids = [archiveId(2001, 1), archiveId(2002, 2)];
  put(k('h', 'big', ids[0] as string), { id: ids[0], stamp: 2001, item: { id: 'i0', payload: '', publisher: 'alice@a.test', published: 2001 } });
  put(k('h', 'big', ids[1] as string), { id: ids[1], stamp: 2002, retracted: ['i3'] });
  put(k('H', 'big'), { seq: 2, count: 2 });
  put(k('n', 'timed'), record('timed', { itemExpire: 60 }));
  const lease: Subscription = { node: 'timed', jid: 'bob@b.test/x', subid: 's1', state: 'subscribed', options: { deliver: true, subscriptionType: 'items', expire: 99_000 } };
  put(k('s', 'timed', lease.jid, lease.subid), lease);
  put(k('S', 'bob@b.test', 'timed', lease.jid, lease.subid), lease);
  await kv.batch(ops);
  await kv.close();
  return { order: [...seqs.keys()] };
}

describe('store layout 1 (written by an older Hermod)', () => {
  it('opens, is upgraded once (logged), and serves items, pages, archive and timers as before', async () => {
    const location = path.join(root, 'old');
    const { order } = await writeLayout1(location);
    const logged: Array<[string, Record<string, unknown> | undefined]> = [];
    const log = { info: (msg: string, fields?: Record<string, unknown>) => void logged.push([msg, fields]) };
    let store = new LevelStore(location, { log });
    await store.open();
    assert.equal(logged.length, 1, 'the upgrade is logged');
    assert.match(logged[0]?.[0] ?? '', /upgraded/);
    assert.deepEqual(logged[0]?.[1] && { ...logged[0][1], ms: 0 }, { orderKeys: 597, expiringNodes: 1, leasedSubscriptions: 1, ms: 0 });

    assert.deepEqual((await store.getItems('big')).map((i) => i.id), order);
    assert.equal(await store.countItems('big'), 597);
    for (const index of [0, 2, 255, 256, 298, 299, 500, 596]) {
      assert.deepEqual(await store.pageItemIds('big', { max: 2, index }), { entries: order.slice(index, index + 2), count: 597, firstIndex: index }, `index ${index}`);
    }
    assert.deepEqual(await store.pageItemIds('big', { max: 2, after: 'i302' }), { entries: ['i303', 'i304'], count: 597, firstIndex: order.indexOf('i303') });
    assert.deepEqual(await store.pageItemIds('big', { max: 2, before: 'i10' }), { entries: ['i598', 'i599'], count: 597, firstIndex: 594 });
    assert.deepEqual((await store.pageArchive('big', {}, { max: 10 }))?.entries.map((e) => e.item?.id ?? e.retracted), ['i0', ['i3']]);
    const timers = await store.timerIndex();
    assert.deepEqual([[...timers.itemExpiry], [...timers.leaseEnds]], [[['timed', 60]], [['timed', 99_000]]]);
    assert.equal((await store.getAffiliationsOf('alice@a.test'))[0]?.affiliation, 'owner');

    // Writing goes on from where layout 1 left off.
    const published = await store.publishItem('big', { id: 'new', payload: '', publisher: 'alice@a.test', published: 9000 }, { keep: 597, archive: { keep: 100 } });
    assert.deepEqual(published.dropped, ['i0']);
    assert.deepEqual(await store.pageItemIds('big', { max: 1, index: 596 }), { entries: ['new'], count: 597, firstIndex: 596 });
    assert.equal((await store.pageArchive('big', {}, { max: 10 }))?.entries.at(-1)?.id, published.archiveId);

    await store.close();
    store = new LevelStore(location, { log });
    await store.open();
    assert.equal(logged.length, 1, 'upgraded once only');
    assert.deepEqual(await store.pageItemIds('big', { max: 2, index: 299 }), { entries: [order[300], order[301]], count: 597, firstIndex: 299 });
    await store.close();
  });
});

describe('counted order index', () => {
  it('gives positions and the key at an index for sequence numbers spread over every bucket level', async () => {
    const kv = new LevelKv(path.join(root, 'sparse'));
    await kv.open();
    // Deterministic spread: clusters and lone keys from 1 to ~2^44.
    const seqs = new Set<number>();
    let x = 12345;
    const next = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < 400; i++) seqs.add(next() % 300);
    for (let i = 0; i < 300; i++) seqs.add(70_000 + (next() % 5000));
    for (let i = 0; i < 200; i++) seqs.add(next() * 2 ** 13 + (next() % 2 ** 13));
    seqs.add(2 ** 44 - 1);
    const sorted = [...seqs].sort((a, b) => a - b);
    const counters = new Map<string, number>();
    const write = async (changes: Array<[number, number]>): Promise<void> => {
      const ops: BatchOp[] = changes.map(([seq, delta]) => (delta > 0 ? { type: 'put', key: orderKey('n', seq), value: `v${seq}` } : { type: 'del', key: orderKey('n', seq) }));
      for (const [key, value] of applyDeltas(counterDeltas('n', changes), (key) => counters.get(key) ?? 0, ops)) counters.set(key, value);
      await kv.batch(ops);
    };
    await write(sorted.map((seq) => [seq, 1]));
    const check = async (list: number[]): Promise<void> => {
      for (const i of [0, 1, 150, list.length >> 1, list.length - 2, list.length - 1]) {
        assert.equal(await positionOf(kv, 'n', list[i] as number), i, `position of ${list[i]}`);
        assert.equal(await orderKeyAt(kv, 'n', i, sorted.at(-1) as number), orderKey('n', list[i] as number), `key at ${i}`);
      }
      assert.equal(await orderKeyAt(kv, 'n', list.length, sorted.at(-1) as number), undefined);
      assert.equal(await positionOf(kv, 'n', 2 ** 45), list.length, 'a seq past the end');
    };
    await check(sorted);
    // Remove a third of them, from every level.
    const removed = sorted.filter((_, i) => i % 3 === 1);
    await write(removed.map((seq) => [seq, -1]));
    await check(sorted.filter((_, i) => i % 3 !== 1));
    await kv.close();
  });
});
