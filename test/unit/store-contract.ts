// The Store contract: every backend must pass these. Call storeContract(name, factory) from a
// backend's test file; `reopen` (when given) checks that state survives closing the store.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_NODE_CONFIG } from '../../src/pubsub/node-config.ts';
import type { ArchiveEntry, Item, NodeRecord } from '../../src/pubsub/types.ts';
import type { Page, Store } from '../../src/store/store.ts';

export interface StoreFactory {
  /** A fresh, empty, opened store. */
  create(): Promise<Store>;
  /** Close and open the same store again (durable backends only). */
  reopen?(store: Store): Promise<Store>;
  /**
   * A fresh store whose writes can be made to fail as a full disk would (backends that write in
   * batches): after `failAfter(n)`, n more batches succeed and every later one rejects, until
   * `failAfter(Infinity)`.
   */
  createFailing?(): Promise<{ store: Store; failAfter(batches: number): void }>;
}

/** What a reader can see of a node's items and archive. */
async function snapshot(s: Store, n: string): Promise<unknown> {
  const order = (await s.getItems(n)).map((i) => [i.id, i.payload]);
  const archive = (await s.pageArchive(n, {}, { max: 1000 }))?.entries.map((e) => [e.item?.id, e.retracted]);
  const pages = await Promise.all([0, 1, 2].map((index) => s.pageItemIds(n, { max: 2, index })));
  return { order, count: await s.countItems(n), archive, pages };
}

const node = (id: string): NodeRecord => ({ id, config: { ...DEFAULT_NODE_CONFIG, title: `t-${id}` }, creator: 'alice@a.test', created: 1000 });
const item = (id: string, payload = `<p xmlns="x">${id}</p>`): Item => ({ id, payload, publisher: 'alice@a.test', published: 2000 });
const ids = (items: Item[]): string[] => items.map((i) => i.id);

export function storeContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    it('creates, lists, updates and deletes nodes', async () => {
      const s = await factory.create();
      await s.putNode(node('b'));
      await s.putNode(node('a'));
      assert.deepEqual((await s.listNodes()).map((n) => n.id).sort(), ['a', 'b']);
      await s.putNode({ ...node('a'), config: { ...DEFAULT_NODE_CONFIG, title: 'changed' } });
      assert.equal((await s.getNode('a'))?.config.title, 'changed');
      await s.deleteNode('a');
      assert.equal(await s.getNode('a'), undefined);
      assert.deepEqual((await s.listNodes()).map((n) => n.id), ['b']);
      await s.close();
    });

    it('keeps affiliations per node with a reverse index by JID', async () => {
      const s = await factory.create();
      await s.putNode(node('n1'));
      await s.putNode(node('n2'));
      await s.setAffiliation('n1', 'bob@b.test', 'member');
      await s.setAffiliation('n2', 'bob@b.test', 'publisher');
      await s.setAffiliation('n1', 'carol@b.test', 'outcast');
      assert.deepEqual([...(await s.getAffiliations('n1'))].sort(), [
        ['bob@b.test', 'member'],
        ['carol@b.test', 'outcast'],
      ]);
      assert.deepEqual(await s.getAffiliationsOf('bob@b.test'), [
        { node: 'n1', affiliation: 'member' },
        { node: 'n2', affiliation: 'publisher' },
      ]);
      await s.setAffiliation('n1', 'bob@b.test', 'none');
      assert.equal((await s.getAffiliations('n1')).has('bob@b.test'), false);
      await s.deleteNode('n2');
      assert.deepEqual(await s.getAffiliationsOf('bob@b.test'), []);
      await s.close();
    });

    it('keeps subscriptions per node and per bare JID (any resource)', async () => {
      const s = await factory.create();
      await s.putNode(node('n1'));
      await s.putNode(node('n2'));
      await s.putSubscription({ node: 'n1', jid: 'bob@b.test', subid: 's1', state: 'subscribed' });
      await s.putSubscription({ node: 'n2', jid: 'bob@b.test/phone', subid: 's2', state: 'subscribed' });
      await s.putSubscription({ node: 'n1', jid: 'carol@b.test', subid: 's3', state: 'pending' });
      assert.deepEqual((await s.getSubscriptions('n1')).map((x) => x.subid).sort(), ['s1', 's3']);
      assert.deepEqual((await s.getSubscriptionsOf('bob@b.test')).map((x) => x.subid).sort(), ['s1', 's2']);
      await s.deleteSubscription('n1', 'bob@b.test', 's1');
      assert.deepEqual((await s.getSubscriptionsOf('bob@b.test')).map((x) => x.subid), ['s2']);
      await s.deleteNode('n2');
      assert.deepEqual(await s.getSubscriptionsOf('bob@b.test'), []);
      await s.close();
    });

    it('orders items by publication, a republished id becomes newest, and trims the oldest', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (const id of ['a', 'b', 'c']) assert.deepEqual(await s.putItem('n', item(id), 10), []);
      await s.putItem('n', item('a', '<p xmlns="x">a2</p>'), 10);
      assert.deepEqual(ids(await s.getItems('n')), ['b', 'c', 'a']);
      assert.equal((await s.getItems('n', { ids: ['a'] }))[0]?.payload, '<p xmlns="x">a2</p>');
      assert.equal(await s.countItems('n'), 3);
      assert.deepEqual(await s.putItem('n', item('d'), 3), ['b']);
      assert.deepEqual(ids(await s.getItems('n')), ['c', 'a', 'd']);
      assert.deepEqual(ids(await s.getItems('n', { max: 2 })), ['a', 'd']);
      assert.deepEqual(ids(await s.getItems('n', { ids: ['d', 'zz', 'c'] })), ['c', 'd']);
      assert.deepEqual(ids(await s.getItems('n', { max: 0 })), []);
      assert.deepEqual(await s.trimItems('n', 1), ['c', 'a']);
      assert.equal(await s.countItems('n'), 1);
      await s.close();
    });

    it('replacing an item at the limit keeps the others', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      await s.putItem('n', item('a'), 2);
      await s.putItem('n', item('b'), 2);
      assert.deepEqual(await s.putItem('n', item('a'), 2), []);
      assert.deepEqual(ids(await s.getItems('n')), ['b', 'a']);
      await s.close();
    });

    it('deletes and purges items and counts them', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (const id of ['a', 'b', 'c']) await s.putItem('n', item(id), 10);
      assert.equal(await s.deleteItem('n', 'b'), true);
      assert.equal(await s.deleteItem('n', 'b'), false);
      assert.deepEqual(ids(await s.getItems('n')), ['a', 'c']);
      assert.equal(await s.countItems('n'), 2);
      await s.purgeItems('n');
      assert.deepEqual(await s.getItems('n'), []);
      assert.equal(await s.countItems('n'), 0);
      await s.putItem('n', item('e'), 10);
      assert.deepEqual(ids(await s.getItems('n')), ['e']);
      await s.close();
    });

    it('deleting a node removes its items; a new node of the same name starts empty', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      await s.putItem('n', item('a'), 10);
      await s.setAffiliation('n', 'bob@b.test', 'member');
      await s.deleteNode('n');
      await s.putNode(node('n'));
      assert.deepEqual(await s.getItems('n'), []);
      assert.equal(await s.countItems('n'), 0);
      assert.equal((await s.getAffiliations('n')).size, 0);
      await s.close();
    });

    it('node and item ids starting above U+FFFF (an emoji) are listed, counted, indexed by JID, purged and deleted like any other', async () => {
      const s = await factory.create();
      for (const id of ['\u{1F600}club', 'news', '\u{10FFFF}last', '\uFFFFedge']) {
        await s.putNode(node(id));
        await s.setAffiliation(id, 'bob@b.test', 'owner');
        await s.putSubscription({ node: id, jid: 'bob@b.test', subid: `s-${id}`, state: 'subscribed' });
      }
      const all = ['\u{1F600}club', 'news', '\u{10FFFF}last', '\uFFFFedge'].sort();
      assert.deepEqual((await s.listNodes()).map((n) => n.id).sort(), all);
      const page = await s.pageNodes({ max: 10 });
      assert.equal(page.count, 4);
      assert.deepEqual(page.entries.map((n) => n.id).sort(), all);
      assert.deepEqual((await s.getAffiliationsOf('bob@b.test')).map((a) => a.node).sort(), all);
      assert.deepEqual((await s.getSubscriptionsOf('bob@b.test')).map((x) => x.node).sort(), all);
      for (const id of ['a', '\u{1F600}b', '\u{10FFFF}c']) await s.putItem('\u{1F600}club', item(id), 10);
      assert.deepEqual((await s.pageItemIds('\u{1F600}club', { max: 10 }))?.entries, ['a', '\u{1F600}b', '\u{10FFFF}c']);
      await s.purgeItems('\u{1F600}club');
      assert.deepEqual(await s.getItems('\u{1F600}club'), []);
      assert.deepEqual(await s.getItems('\u{1F600}club', { ids: ['\u{1F600}b'] }), [], 'purged, however its id starts');
      await s.putItem('news', item('\u{1F600}x'), 10);
      await s.deleteNode('news');
      await s.putNode(node('news'));
      assert.deepEqual(await s.getItems('news', { ids: ['\u{1F600}x'] }), [], 'deleted with its node');
      await s.close();
    });

    it('keeps concurrent publishes to one node consistent', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      await Promise.all(Array.from({ length: 50 }, (_, i) => s.putItem('n', item(`i${i}`), 20)));
      assert.equal(await s.countItems('n'), 20);
      assert.deepEqual(ids(await s.getItems('n')), Array.from({ length: 20 }, (_, i) => `i${i + 30}`));
      await s.close();
    });

    it('pages item ids in publication order with after, before, index and count', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (let i = 0; i < 25; i++) await s.putItem('n', item(`i${i}`), 100);
      await s.putItem('n', item('i3'), 100); // republished: now newest
      await s.deleteItem('n', 'i10');
      const order = ids(await s.getItems('n'));
      assert.equal(order.length, 24);
      assert.equal(order.at(-1), 'i3');
      // forwards, page by page
      const seen: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await s.pageItemIds('n', { max: 5, ...(after !== undefined ? { after } : {}) });
        assert.ok(page);
        assert.equal(page.count, 24);
        if (page.entries.length === 0) break;
        assert.equal(page.firstIndex, seen.length);
        seen.push(...page.entries);
        after = page.entries.at(-1);
      }
      assert.deepEqual(seen, order);
      // backwards from the last page
      const back: string[] = [];
      let before = '';
      for (;;) {
        const page = await s.pageItemIds('n', { max: 7, before });
        assert.ok(page);
        if (page.entries.length === 0) break;
        assert.equal(page.firstIndex, 24 - back.length - page.entries.length);
        back.unshift(...page.entries);
        before = page.entries[0] as string;
      }
      assert.deepEqual(back, order);
      const byIndex = await s.pageItemIds('n', { max: 3, index: 10 });
      assert.deepEqual(byIndex, { entries: order.slice(10, 13), count: 24, firstIndex: 10 });
      assert.deepEqual((await s.pageItemIds('n', { max: 3, index: 30 }))?.entries, []);
      assert.equal((await s.pageItemIds('n', { max: 0 }))?.count, 24);
      assert.equal(await s.pageItemIds('n', { max: 5, after: 'i10' }), undefined, 'a deleted anchor has no position');
      assert.equal(await s.pageItemIds('n', { max: 5, before: 'nope' }), undefined);
      await s.close();
    });

    it('keeps page positions right after items are removed or added', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (let i = 0; i < 12; i++) await s.putItem('n', item(`i${i}`), 100);
      const p1 = await s.pageItemIds('n', { max: 4 });
      const p2 = await s.pageItemIds('n', { max: 4, after: p1?.entries.at(-1) as string });
      assert.deepEqual(p2?.entries, ['i4', 'i5', 'i6', 'i7']);
      await s.deleteItem('n', 'i1');
      const p3 = await s.pageItemIds('n', { max: 4, after: 'i7' });
      assert.deepEqual(p3, { entries: ['i8', 'i9', 'i10', 'i11'], count: 11, firstIndex: 7 });
      await s.putItem('n', item('i12'), 100);
      const p4 = await s.pageItemIds('n', { max: 4, after: 'i11' });
      assert.deepEqual(p4, { entries: ['i12'], count: 12, firstIndex: 11 });
      await s.putItem('n', item('i13'), 3); // trims the oldest
      assert.deepEqual(await s.pageItemIds('n', { max: 4, after: 'i11' }), { entries: ['i12', 'i13'], count: 3, firstIndex: 1 });
      await s.purgeItems('n');
      assert.deepEqual(await s.pageItemIds('n', { max: 4 }), { entries: [], count: 0, firstIndex: 0 });
      await s.close();
    });

    it('pages nodes in id order; an after/before id need not exist', async () => {
      const s = await factory.create();
      for (const id of ['d', 'a', 'c', 'e', 'b']) await s.putNode(node(id));
      const p1 = await s.pageNodes({ max: 2 });
      assert.deepEqual([p1.entries.map((n) => n.id), p1.count, p1.firstIndex], [['a', 'b'], 5, 0]);
      const p2 = await s.pageNodes({ max: 2, after: 'b' });
      assert.deepEqual([p2.entries.map((n) => n.id), p2.firstIndex], [['c', 'd'], 2]);
      const gone = await s.pageNodes({ max: 2, after: 'bb' });
      assert.deepEqual([gone.entries.map((n) => n.id), gone.firstIndex], [['c', 'd'], 2]);
      const last = await s.pageNodes({ max: 2, before: '' });
      assert.deepEqual([last.entries.map((n) => n.id), last.firstIndex], [['d', 'e'], 3]);
      const prev = await s.pageNodes({ max: 2, before: 'cc' });
      assert.deepEqual([prev.entries.map((n) => n.id), prev.firstIndex], [['b', 'c'], 1]);
      const idx = await s.pageNodes({ max: 10, index: 4 });
      assert.deepEqual([idx.entries.map((n) => n.id), idx.firstIndex], [['e'], 4]);
      await s.close();
    });

    it('keeps a node archive in time order with start/end/after-id/before-id filters, paging and a size bound', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      const ids: string[] = [];
      // stamps 1000, 1000, 2000, 3000, 4000, 5000: equal stamps keep their arrival order
      for (const [i, stamp] of [1000, 1000, 2000, 3000, 4000, 5000].entries()) {
        ids.push(await s.appendArchive('n', i % 2 === 0 ? { stamp, item: item(`a${i}`) } : { stamp, retracted: [`a${i - 1}`] }, 100));
      }
      assert.deepEqual([...ids].sort(), ids, 'ids order as the archive');
      assert.equal(new Set(ids).size, 6);
      const page = (q: Parameters<Store['pageArchive']>[1], p: Parameters<Store['pageArchive']>[2]) => s.pageArchive('n', q, p).then((r) => r ?? assert.fail('page expected'));
      const all = await page({}, { max: 100 });
      assert.deepEqual(all.entries.map((e) => e.id), ids);
      assert.equal(all.count, 6);
      assert.deepEqual(all.entries[1]?.retracted, ['a0']);
      assert.equal(all.entries[2]?.item?.id, 'a2');
      const window = await page({ start: 2000, end: 4000 }, { max: 100 });
      assert.deepEqual([window.entries.map((e) => e.stamp), window.count], [[2000, 3000, 4000], 3]);
      assert.deepEqual((await page({ afterId: ids[1] as string }, { max: 100 })).entries.map((e) => e.id), ids.slice(2));
      assert.deepEqual((await page({ beforeId: ids[2] as string, start: 1000 }, { max: 100 })).entries.map((e) => e.id), ids.slice(0, 2));
      const p1 = await page({ start: 1000 }, { max: 2 });
      const p2 = await page({ start: 1000 }, { max: 2, after: p1.entries.at(-1)?.id as string });
      assert.deepEqual([p2.entries.map((e) => e.id), p2.firstIndex, p2.count], [ids.slice(2, 4), 2, 6]);
      const last = await page({ end: 4000 }, { max: 2, before: '' });
      assert.deepEqual([last.entries.map((e) => e.id), last.firstIndex, last.count], [ids.slice(3, 5), 3, 5]);
      assert.deepEqual((await s.pageArchive('n', { ids: [ids[4] as string, ids[0] as string] }, { max: 10 }))?.entries.map((e) => e.id), [ids[0], ids[4]]);
      assert.equal(await s.pageArchive('n', { afterId: 'nope' }, { max: 10 }), undefined, 'unknown after-id');
      // A clock stepped back: ids (time first) no longer follow the sequence; the last page's
      // position is still exact (a partner counts on it to know how many results to wait for).
      await s.putNode(node('back'));
      const back: string[] = [];
      for (const stamp of [1000, 3000, 2000]) back.push(await s.appendArchive('back', { stamp, item: item(`b${stamp}`) }, 100));
      const [, b2000] = [...back].sort();
      const tail = await s.pageArchive('back', {}, { max: 10, after: b2000 as string });
      assert.deepEqual([tail?.entries.map((e) => e.stamp), tail?.firstIndex, tail?.count], [[3000], 2, 3]);
      assert.equal(await s.pageArchive('n', { ids: ['nope'] }, { max: 10 }), undefined, 'unknown id');
      assert.equal(await s.pageArchive('n', {}, { max: 10, after: 'nope' }), undefined, 'unknown RSM after');
      await s.appendArchive('n', { stamp: 6000, purged: true }, 4);
      const kept = await page({}, { max: 100 });
      assert.deepEqual([kept.entries.map((e) => e.stamp), kept.count], [[3000, 4000, 5000, 6000], 4]);
      await s.deleteNode('n');
      await s.putNode(node('n'));
      const empty = (await s.pageArchive('n', {}, { max: 10 })) ?? assert.fail('page expected');
      assert.deepEqual([empty.entries, empty.count, empty.firstIndex, empty.complete ?? true], [[], 0, 0, true], 'a recreated node starts with an empty archive');
      await s.close();
    });

    it('pages through a trimmed archive forwards and backwards: every entry once, exact positions, the end known', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      const ids: string[] = [];
      // 30 entries kept of 40 appended: the oldest 10 trimmed; a time window over part of them.
      for (let i = 0; i < 40; i++) ids.push(await s.appendArchive('n', { stamp: 1000 + i * 10, item: item(`a${i}`) }, 30));
      const kept = ids.slice(10);
      // What XEP-0313's <fin complete/> says of a page (src/xmpp/mam.ts).
      const ends = (p: Page<ArchiveEntry>, backwards: boolean): boolean => p.complete ?? (backwards ? p.entries.length === 0 || p.firstIndex === 0 : p.firstIndex + p.entries.length >= p.count);
      for (const [query, expected] of [
        [{}, kept],
        [{ start: 1000 + 15 * 10, end: 1000 + 33 * 10 }, ids.slice(15, 34)],
      ] as const) {
        const seen: string[] = [];
        let after: string | undefined;
        for (let n = 0; n < 20; n++) {
          const p = (await s.pageArchive('n', query, { max: 7, ...(after !== undefined ? { after } : {}) })) ?? assert.fail('page expected');
          assert.equal(p.count, expected.length, 'count');
          assert.equal(p.firstIndex, seen.length, 'the index of the first entry of a forward page');
          seen.push(...p.entries.map((e) => e.id));
          const end = ends(p, false);
          assert.equal(end, seen.length === expected.length, `complete only on the last page (after ${seen.length})`);
          if (end) break;
          after = p.entries.at(-1)?.id;
        }
        assert.deepEqual(seen, expected, 'forwards: every entry once, in order');
        const back: string[] = [];
        let before = '';
        for (let n = 0; n < 20; n++) {
          const p = (await s.pageArchive('n', query, { max: 7, before })) ?? assert.fail('page expected');
          back.unshift(...p.entries.map((e) => e.id));
          assert.equal(p.firstIndex, expected.length - back.length, 'the index of the first entry of a backward page');
          const end = ends(p, true);
          assert.equal(end, back.length === expected.length, `complete only on the first page (before ${back.length})`);
          if (end) break;
          before = p.entries[0]?.id as string;
        }
        assert.deepEqual(back, expected, 'backwards: every entry once');
      }
      await s.close();
    });

    it('publishes an item with its archive entry in one write, trimming to max_items in the same write', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      const r1 = await s.publishItem('n', item('a'), { keep: 2, archive: { keep: 100 } });
      await s.publishItem('n', item('b'), { keep: 2, archive: { keep: 100 } });
      const r3 = await s.publishItem('n', item('c'), { keep: 2, archive: { keep: 100 } });
      assert.deepEqual(r1.dropped, []);
      assert.deepEqual(r3.dropped, ['a'], 'the oldest beyond max_items goes in the same write');
      assert.deepEqual(ids(await s.getItems('n')), ['b', 'c']);
      assert.equal(await s.countItems('n'), 2);
      const archive = (await s.pageArchive('n', {}, { max: 10 }))?.entries ?? [];
      assert.deepEqual(archive.map((e) => [e.id, e.item?.id, e.stamp]), [
        [r1.archiveId, 'a', 2000],
        [archive[1]?.id, 'b', 2000],
        [r3.archiveId, 'c', 2000],
      ]);
      // A republication replaces in place and is archived again; the archive keeps its own bound.
      await s.publishItem('n', item('b', '<p xmlns="x">b2</p>'), { keep: 2, archive: { keep: 3 } });
      assert.deepEqual(ids(await s.getItems('n')), ['c', 'b']);
      assert.deepEqual((await s.pageArchive('n', {}, { max: 10 }))?.entries.map((e) => e.item?.payload), ['<p xmlns="x">b</p>', '<p xmlns="x">c</p>', '<p xmlns="x">b2</p>']);
      // Without archive options: no archive entry.
      const plain = await s.publishItem('n', item('d'), { keep: 2 });
      assert.deepEqual([plain.dropped, plain.archiveId], [['c'], undefined]);
      assert.equal((await s.pageArchive('n', {}, { max: 10 }))?.count, 3);
      await s.close();
    });

    it('publishMany leaves the node and its archive as the same publishItem calls in order would', async () => {
      const many = await factory.create();
      const one = await factory.create();
      const v = (id: string, n: number): Item => item(id, `<p xmlns="x">${id}.${n}</p>`);
      /** The same publications through both stores; publishMany's archive ids are those of its entries. */
      const both = async (n: string, items: Item[], options: { keep: number; archive?: { keep: number } }): Promise<void> => {
        const { archiveIds } = await many.publishMany(n, items, options);
        for (const i of items) await one.publishItem(n, i, options);
        const archive = (await many.pageArchive(n, {}, { max: 1000 }))?.entries ?? [];
        if (options.archive) assert.equal(archiveIds.length, items.length, 'one archive entry per item');
        for (const [k, id] of archiveIds.entries()) {
          const entry = archive.find((e) => e.id === id);
          if (entry) assert.equal(entry.item?.payload, items[k]?.payload, `archive id ${k} names its item's entry`);
        }
        const pages = async (s: Store): Promise<unknown> => Promise.all([0, 1, 5, 60, 63, 64, 130, 200].map((index) => s.pageItemIds(n, { max: 4, index })));
        assert.deepEqual(await snapshot(many, n), await snapshot(one, n));
        assert.deepEqual(await pages(many), await pages(one));
      };
      for (const s of [many, one]) for (const n of ['n', 'small', 'big']) await s.putNode(node(n));
      await both('n', ['a', 'b', 'c'].map((id) => v(id, 0)), { keep: 5, archive: { keep: 6 } });
      // A stored id replaced, an id twice in the batch, the oldest stored trimmed, the archive trimmed.
      await both('n', [v('d', 1), v('b', 1), v('e', 1), v('d', 2), v('f', 1)], { keep: 4, archive: { keep: 6 } });
      assert.deepEqual(ids(await many.getItems('n')), ['b', 'e', 'd', 'f']);
      // A batch larger than max_items: only its newest stay (a stored one it named included).
      await both('small', [v('x', 0), v('y', 0)], { keep: 2, archive: { keep: 100 } });
      await both('small', [v('p', 1), v('x', 1), v('q', 1), v('r', 1)], { keep: 2, archive: { keep: 3 } });
      assert.deepEqual(ids(await many.getItems('small')), ['q', 'r']);
      // Hundreds of items over every level of the order index, without archive.
      await both('big', Array.from({ length: 150 }, (_, i) => v(`i${i}`, 0)), { keep: 250 });
      await both('big', Array.from({ length: 200 }, (_, i) => v(`i${(i * 7) % 260}`, 1)), { keep: 250 });
      assert.deepEqual(await many.publishMany('big', [], { keep: 250 }), { dropped: [], archiveIds: [] });
      await many.close();
      await one.close();
    });

    it('retracts items with one tombstone in one write, skipping ids not in the node; purges likewise', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (const id of ['a', 'b', 'c', 'd']) await s.publishItem('n', item(id), { keep: 10 });
      const r = await s.retractItems('n', ['c', 'zz', 'a', 'c'], { archive: { stamp: 3000, keep: 100 } });
      assert.deepEqual(r.retracted, ['a', 'c'], 'in publication order, once each');
      assert.deepEqual(ids(await s.getItems('n')), ['b', 'd']);
      assert.equal(await s.countItems('n'), 2);
      assert.deepEqual((await s.pageArchive('n', {}, { max: 10 }))?.entries.map((e) => [e.id, e.stamp, e.retracted]), [[r.archiveId, 3000, ['a', 'c']]]);
      assert.deepEqual(await s.retractItems('n', ['zz'], { archive: { stamp: 4000, keep: 100 } }), { retracted: [] }, 'nothing removed: no tombstone');
      assert.deepEqual(await s.retractItems('n', ['b']), { retracted: ['b'] });
      assert.equal((await s.pageArchive('n', {}, { max: 10 }))?.count, 1);
      assert.deepEqual(await s.pageItemIds('n', { max: 5, index: 0 }), { entries: ['d'], count: 1, firstIndex: 0 });
      await s.purgeItems('n', { archive: { stamp: 5000, keep: 100 } });
      assert.deepEqual([await s.countItems('n'), (await s.pageArchive('n', {}, { max: 10 }))?.entries.map((e) => [e.stamp, e.purged])], [0, [[3000, undefined], [5000, true]]], 'a purge and its archive entry in one write');
      await s.close();
    });

    it('places RSM pages anywhere in a node of several hundred items (after, before, index)', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (let i = 0; i < 300; i++) await s.publishItem('n', item(`i${i}`), { keep: 1000 });
      await s.retractItems('n', ['i5', 'i100', 'i101', 'i299']);
      await s.publishItem('n', item('i7'), { keep: 1000 }); // republished: now newest
      await s.publishItem('n', item('i0'), { keep: 294 }); // republished, and the oldest two trimmed
      const order = ids(await s.getItems('n'));
      const count = order.length;
      assert.equal(count, 294);
      assert.deepEqual(order.slice(0, 3), ['i3', 'i4', 'i6']);
      for (const index of [0, 1, 60, 61, 62, 63, 64, 97, 98, 124, 125, 126, 250, 251, 252, 253, 254, 255, 256, 292, 293, 294]) {
        assert.deepEqual(await s.pageItemIds('n', { max: 3, index }), { entries: order.slice(index, index + 3), count, firstIndex: index }, `index ${index}`);
      }
      for (const at of [0, 60, 61, 62, 96, 125, 250, 251, 252, 253, 292, 293]) {
        const anchor = order[at] as string;
        const after = await s.pageItemIds('n', { max: 3, after: anchor });
        if (at + 1 < count) assert.deepEqual(after, { entries: order.slice(at + 1, at + 4), count, firstIndex: at + 1 }, `after ${anchor}`);
        const before = await s.pageItemIds('n', { max: 3, before: anchor });
        if (at > 0) assert.deepEqual(before, { entries: order.slice(Math.max(0, at - 3), at), count, firstIndex: Math.max(0, at - 3) }, `before ${anchor}`);
      }
      await s.close();
    });

    it('keeps a timer index: nodes with item expiry and the earliest lease end per node', async () => {
      const s = await factory.create();
      const expiring = (id: string, itemExpire: number | 'max'): NodeRecord => ({ ...node(id), config: { ...DEFAULT_NODE_CONFIG, itemExpire } });
      await s.putNode(expiring('x', 60));
      await s.putNode(expiring('y', 'max'));
      await s.putNode(node('z'));
      const lease = (n: string, subid: string, expire?: number) => ({ node: n, jid: `bob@b.test/${subid}`, subid, state: 'subscribed' as const, ...(expire !== undefined ? { options: { deliver: true, subscriptionType: 'items' as const, expire } } : {}) });
      await s.putSubscription(lease('y', 's1', 9000));
      await s.putSubscription(lease('y', 's2', 5000));
      await s.putSubscription(lease('z', 's3'));
      await s.putSubscription(lease('z', 's4', 7000));
      let index = await s.timerIndex();
      assert.deepEqual([...index.itemExpiry], [['x', 60]]);
      assert.deepEqual([...index.leaseEnds].sort(), [['y', 5000], ['z', 7000]]);
      await s.putNode(expiring('x', 'max'));
      await s.putNode(expiring('y', 30));
      await s.deleteSubscription('y', 'bob@b.test/s2', 's2');
      await s.putSubscription(lease('z', 's4')); // the lease is lifted
      index = await s.timerIndex();
      assert.deepEqual([...index.itemExpiry], [['y', 30]]);
      assert.deepEqual([...index.leaseEnds], [['y', 9000]]);
      await s.deleteNode('y');
      index = await s.timerIndex();
      assert.deepEqual([index.itemExpiry.size, index.leaseEnds.size], [0, 0]);
      await s.close();
    });

    it('keeps state spaces apart from each other and from the pub/sub data: get, getMany, batched put/del, prefix ranges in UTF-8 order', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      const a = s.state('replication');
      const b = s.state('midgard');
      await a.batch([
        { type: 'put', key: 'cp\0feed', value: '"42"' },
        { type: 'put', key: 'rev\0doc\0' + '2-b', value: 'p' },
        { type: 'put', key: 'rev\0doc\0' + '1-a', value: 'i' },
        { type: 'put', key: 'rev\0doc\0' + '3-😀', value: 'i' },
        { type: 'put', key: 'rev\0doc\0' + '3-\uffff', value: 'i' },
        { type: 'put', key: 'rev\0dod\0' + '1-z', value: 'p' },
        { type: 'put', key: 'rev\0doc', value: 'not under the prefix with its separator' },
      ]);
      await b.batch([{ type: 'put', key: 'cp\0feed', value: '"midgard"' }]);
      assert.equal(await a.get('cp\0feed'), '"42"');
      assert.equal(await b.get('cp\0feed'), '"midgard"');
      assert.deepEqual(await a.getMany(['rev\0doc\0' + '1-a', 'nope', 'cp\0feed']), ['i', undefined, '"42"']);
      assert.deepEqual(await b.getMany([]), []);
      const range = async (space: typeof a, prefix: string, limit?: number): Promise<string[]> => {
        const out: string[] = [];
        for await (const [k] of space.range(prefix, limit === undefined ? {} : { limit })) out.push(k);
        return out;
      };
      assert.deepEqual(await range(a, 'rev\0doc\0'), ['rev\0doc\0' + '1-a', 'rev\0doc\0' + '2-b', 'rev\0doc\0' + '3-\uffff', 'rev\0doc\0' + '3-😀']);
      assert.deepEqual(await range(a, 'rev\0doc\0', 2), ['rev\0doc\0' + '1-a', 'rev\0doc\0' + '2-b']);
      assert.deepEqual(await range(b, ''), ['cp\0feed']);
      await a.batch([
        { type: 'del', key: 'rev\0doc\0' + '2-b' },
        { type: 'del', key: 'never-written' },
        { type: 'put', key: 'cp\0feed', value: '"43"' },
      ]);
      assert.deepEqual([await a.get('rev\0doc\0' + '2-b'), await a.get('cp\0feed')], [undefined, '"43"']);
      assert.equal((await range(a, '')).length, 6);
      // The pub/sub data does not see the state, nor the state the pub/sub data.
      assert.deepEqual((await s.listNodes()).map((n) => n.id), ['n']);
      await s.deleteNode('n');
      assert.equal(await a.get('cp\0feed'), '"43"');
      assert.throws(() => s.state('a\0b'), /state space name/);
      assert.throws(() => s.state(''), /state space name/);
      await s.close();
    });

    if (factory.createFailing) {
      const createFailing = factory.createFailing;
      it('a publication or retraction whose write fails leaves nothing of it (all or nothing), and the next one counts right', async () => {
        const outcomes: string[] = [];
        // The disk fills up after 0, 1 or 2 more batches: whatever a change wrote must be all of it.
        for (const batches of [0, 1, 2]) {
          const { store: s, failAfter } = await createFailing();
          await s.putNode(node('n'));
          for (const id of ['a', 'b', 'c']) await s.publishItem('n', item(id), { keep: 3, archive: { keep: 100 } });
          const before = await snapshot(s, 'n');
          failAfter(batches);
          const published = await s.publishItem('n', item('d'), { keep: 3, archive: { keep: 100 } }).then(() => 'written', () => 'failed');
          failAfter(Infinity);
          if (published === 'failed') assert.deepEqual(await snapshot(s, 'n'), before, `nothing of the failed publication is left (${batches})`);
          else {
            assert.deepEqual(ids(await s.getItems('n')), ['b', 'c', 'd'], 'the item is in, the oldest trimmed');
            assert.equal((await s.pageArchive('n', {}, { max: 10 }))?.entries.at(-1)?.item?.id, 'd', 'its archive entry is in');
          }
          const middle = await snapshot(s, 'n');
          failAfter(batches);
          const retracted = await s.retractItems('n', ['b', 'c'], { archive: { stamp: 3000, keep: 100 } }).then(() => 'written', () => 'failed');
          failAfter(Infinity);
          if (retracted === 'failed') assert.deepEqual(await snapshot(s, 'n'), middle, `nothing of the failed retraction is left (${batches})`);
          else {
            assert.deepEqual((await s.getItems('n', { ids: ['b', 'c'] })).length, 0, 'the items are out');
            assert.deepEqual((await s.pageArchive('n', {}, { max: 10 }))?.entries.at(-1)?.retracted, ['b', 'c'], 'their tombstone is in');
          }
          await s.publishItem('n', item('e'), { keep: 3, archive: { keep: 100 } });
          const full = await snapshot(s, 'n');
          failAfter(batches);
          const purged = await s.purgeItems('n', { archive: { stamp: 4000, keep: 100 } }).then(() => 'written', () => 'failed');
          failAfter(Infinity);
          if (purged === 'failed') assert.deepEqual(await snapshot(s, 'n'), full, `nothing of the failed purge is left (${batches})`);
          else assert.deepEqual([await s.countItems('n'), (await s.pageArchive('n', {}, { max: 10 }))?.entries.at(-1)?.purged], [0, true]);
          outcomes.push(`${published}/${retracted}/${purged}`);
          await s.publishItem('n', item('f'), { keep: 3, archive: { keep: 100 } });
          const order = ids(await s.getItems('n'));
          assert.equal(await s.countItems('n'), order.length);
          assert.deepEqual(await s.pageItemIds('n', { max: 2, index: 1 }), { entries: order.slice(1, 3), count: order.length, firstIndex: 1 });
          await s.close();
        }
        assert.equal(outcomes[0], 'failed/failed/failed', 'with no batch left, every write fails');
      });
    }

    if (factory.reopen) {
      const reopen = factory.reopen;
      it('survives close and reopen', async () => {
        let s = await factory.create();
        await s.putNode(node('n'));
        await s.setAffiliation('n', 'bob@b.test', 'publisher');
        await s.putSubscription({ node: 'n', jid: 'bob@b.test/x', subid: 's', state: 'subscribed' });
        await s.putItem('n', item('a'), 10);
        await s.putItem('n', item('b'), 10);
        await s.state('replication').batch([{ type: 'put', key: 'cp\0feed', value: '"7"' }]);
        s = await reopen(s);
        assert.equal(await s.state('replication').get('cp\0feed'), '"7"', 'state spaces are durable too');
        assert.equal((await s.getNode('n'))?.config.title, 't-n');
        assert.equal((await s.getAffiliations('n')).get('bob@b.test'), 'publisher');
        assert.equal((await s.getSubscriptionsOf('bob@b.test'))[0]?.jid, 'bob@b.test/x');
        assert.deepEqual(ids(await s.getItems('n')), ['a', 'b']);
        await s.putItem('n', item('c'), 10);
        assert.deepEqual(ids(await s.getItems('n')), ['a', 'b', 'c']);
        await s.close();
      });
    }
  });
}
