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
import { all, type BatchOp } from '../../src/store/kv.ts';
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

describe('counted order index: levels in use', () => {
  const item = (id: string): { id: string; payload: string; publisher: string; published: number } => ({ id, payload: `<p>${id}</p>`, publisher: 'alice@a.test', published: 1000 });
  const counterLevels = async (kv: LevelKv, node: string): Promise<number[]> => {
    const levels = new Set<number>();
    for await (const key of kv.keys({ gt: k('c', node, ''), lt: k('c', node, '\uffff') })) levels.add(Number(key.split('\0')[2]));
    return [...levels].sort();
  };

  it('counts only the levels a node has left bucket 0 of, each starting from the node’s count (over a counter an earlier Hermod left)', async () => {
    const location = path.join(root, 'levels');
    const store = new LevelStore(location);
    await store.open();
    await store.putNode(record('n'));
    const order: string[] = [];
    const publish = async (id: string): Promise<void> => {
      await store.publishItem('n', item(id), { keep: 100_000, archive: { keep: 100_000 } });
      order.push(id);
    };
    for (let i = 1; i < 64; i++) await publish(`a${i}`);
    for (const id of ['a5', 'a40']) {
      await store.retractItems('n', [id]);
      order.splice(order.indexOf(id), 1);
    }
    await store.close();
    // An earlier Hermod counted every level: a level-1 and a level-2 counter it kept while no
    // page read them, now stale.
    const kv = new LevelKv(location);
    await kv.open();
    await kv.batch([
      { type: 'put', key: k('c', 'n', '1', hex12(0)), value: '999' },
      { type: 'put', key: k('c', 'n', '2', hex12(0)), value: '999' },
    ]);
    await kv.close();
    const reopened = new LevelStore(location);
    await reopened.open();
    const again = async (id: string): Promise<void> => {
      await reopened.publishItem('n', item(id), { keep: 100_000, archive: { keep: 100_000 } });
      order.push(id);
    };
    for (let i = 0; i < 100; i++) await again(`b${i}`); // sequence numbers 64..163: level 1 comes into use
    await reopened.retractItems('n', ['a7', 'b70']);
    for (const id of ['a7', 'b70']) order.splice(order.indexOf(id), 1);
    for (const at of [0, 1, 60, 61, 62, 100, order.length - 1]) {
      assert.deepEqual(await reopened.pageItemIds('n', { max: 1, index: at }), { entries: [order[at]], count: order.length, firstIndex: at }, `index ${at}`);
      if (at < order.length - 1) assert.deepEqual(await reopened.pageItemIds('n', { max: 1, after: order[at] as string }), { entries: [order[at + 1]], count: order.length, firstIndex: at + 1 }, `after ${order[at]}`);
    }
    await reopened.close();
    const check = new LevelKv(location);
    await check.open();
    // Level 2 (from sequence number 4096) is not in use: its stale counter was neither read nor written.
    assert.deepEqual(await counterLevels(check, 'n'), [1, 2]);
    assert.equal(await check.get(k('c', 'n', '2', hex12(0))), '999');
    assert.deepEqual(await all(check.keys({ gt: k('c', 'n', '1', ''), lt: k('c', 'n', '1', '\uffff') })), [0, 1, 2].map((b) => k('c', 'n', '1', hex12(b))));
    assert.equal(await check.get(k('c', 'n', '1', hex12(0))), String(order.filter((id) => id.startsWith('a')).length));
    await check.close();
  });

  it('writes no counter for a node that has not reached 64 publications', async () => {
    const location = path.join(root, 'small');
    const store = new LevelStore(location);
    await store.open();
    await store.putNode(record('s'));
    for (let i = 0; i < 63; i++) await store.publishItem('s', item(`i${i}`), { keep: 100_000, archive: { keep: 100_000 } });
    await store.retractItems('s', ['i10']);
    assert.deepEqual(await store.pageItemIds('s', { max: 2, after: 'i20' }), { entries: ['i21', 'i22'], count: 62, firstIndex: 20 });
    await store.close();
    const kv = new LevelKv(location);
    await kv.open();
    assert.deepEqual(await counterLevels(kv, 's'), []);
    await kv.close();
  });
});
