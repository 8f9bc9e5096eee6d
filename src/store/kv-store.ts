// The Store on an ordered key-value map (OrderedKv): the layout, bookkeeping and paging every
// key-value backend shares. LevelDB (level.ts) and CouchDB (couchdb.ts) only supply the map.
// Every multi-key change is one OrderedKv batch (atomic on LevelDB; see couchdb.ts for CouchDB).
//
// Key layout ('\0' never occurs in JIDs, node ids or item ids, which are XML text):
//   n\0<node>                          NodeRecord JSON
//   m\0<node>                          {seq, count} item bookkeeping
//   a\0<node>\0<jid>                   affiliation            A\0<jid>\0<node>  reverse index
//   s\0<node>\0<jid>\0<subid>          Subscription JSON      S\0<bare>\0<node>\0<jid>\0<subid>
//   i\0<node>\0<itemId>                {seq, item} JSON
//   o\0<node>\0<seq as 12 hex digits>  itemId (publication order)
//   h\0<node>\0<archive id>           ArchiveEntry JSON (history)   H\0<node>  {seq, count}
//
// Paging (pageItemIds, pageNodes) reads only the keys of one page. The position of a page's
// first entry needs the number of keys before it; that count is remembered per node for the
// first and last key of every page served (so paging on from there costs nothing) and forgotten
// whenever an item of the node is removed (appends at the end do not move earlier positions).

import { LRUCache } from 'lru-cache';
import type { Affiliation, ArchiveEntry, Item, NodeRecord, Subscription } from '../pubsub/types.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { all, type BatchOp, type OrderedKv } from './kv.ts';
import { archiveBounds, archiveId, bareJid, namedArchiveIds, pageOf, type ArchiveQuery, type ItemQuery, type Page, type PageRequest, type Store } from './store.ts';

const SEP = '\0';
const key = (...parts: string[]): string => parts.join(SEP);
const seqKey = (seq: number): string => seq.toString(16).padStart(12, '0');
/** The keys under a prefix, as exclusive bounds. */
const rangeOf = (prefix: string): { lo: string; hi: string } => ({ lo: prefix + SEP, hi: prefix + SEP + '\uffff' });
const rangeOfGt = (prefix: string): { gt: string; lt: string } => ({ gt: prefix + SEP, lt: prefix + SEP + '\uffff' });

interface ItemMeta {
  seq: number;
  count: number;
}
interface StoredItem {
  seq: number;
  item: Item;
}

export class KvStore implements Store {
  private readonly nodeLocks = new KeyedMutex();
  /** Per node: o-index key -> number of o-index keys before it. */
  private readonly positions = new LRUCache<string, Map<string, number>>({ max: 1000 });

  constructor(protected readonly db: OrderedKv) {}

  async open(): Promise<void> {
    await this.db.open();
  }

  async close(): Promise<void> {
    await this.nodeLocks.idle();
    await this.db.close();
  }

  private async batch(ops: BatchOp[]): Promise<void> {
    if (ops.length > 0) await this.db.batch(ops);
  }

  private async json<T>(k: string): Promise<T | undefined> {
    const value = await this.db.get(k);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  /** Entries whose key starts with prefix + SEP, in key order. */
  private async *range(prefix: string, options: { reverse?: boolean; limit?: number } = {}): AsyncGenerator<[string, string]> {
    const gt = prefix + SEP;
    const lt = prefix + SEP + '\uffff';
    for await (const entry of this.db.entries({ gt, lt, reverse: options.reverse ?? false, limit: options.limit ?? -1 })) {
      yield entry;
    }
  }

  /** Number of keys above `lo` and below `bound` (or up to it, inclusive). */
  private async countBelow(lo: string, bound: string, inclusive: boolean): Promise<number> {
    let n = 0;
    for await (const _ of this.db.keys(inclusive ? { gt: lo, lte: bound } : { gt: lo, lt: bound })) n++;
    return n;
  }

  /**
   * One page of the keys strictly between `lo` and `hi` (`count` of them). `after`/`before` are
   * keys (need not exist; '' before means the end). `known` remembers positions of keys that
   * exist, across calls.
   */
  private async pageRange(
    { lo, hi }: { lo: string; hi: string },
    count: number,
    page: PageRequest & { afterKey?: string; beforeKey?: string },
    known?: Map<string, number>,
  ): Promise<Page<[string, string]>> {
    const max = Math.max(0, page.max);
    if (max === 0) return { entries: [], count, firstIndex: 0 };
    let entries: Array<[string, string]>;
    let firstIndex: number;
    if (page.afterKey !== undefined) {
      const from = page.afterKey > lo ? page.afterKey : lo;
      entries = await all(this.db.entries({ gt: from, lt: hi, limit: max }));
      const at = known?.get(page.afterKey);
      firstIndex = at !== undefined ? at + 1 : entries.length > 0 ? await this.countBelow(lo, from, true) : 0;
    } else if (page.beforeKey !== undefined) {
      const bound = page.beforeKey === '' || page.beforeKey > hi ? hi : page.beforeKey;
      entries = (await all(this.db.entries({ gt: lo, lt: bound, limit: max, reverse: true }))).reverse();
      const at = page.beforeKey === '' ? count : known?.get(page.beforeKey);
      firstIndex = (at !== undefined ? at : entries.length > 0 ? await this.countBelow(lo, bound, false) : 0) - entries.length;
    } else {
      const index = Math.max(0, page.index ?? 0);
      let start = lo;
      if (index > 0 && index < count) {
        // Skip `index` keys, reading keys only.
        for await (const k of this.db.keys({ gt: lo, lt: hi, limit: index })) start = k;
      }
      entries = index >= count ? [] : await all(this.db.entries({ gt: start, lt: hi, limit: max }));
      firstIndex = index;
    }
    const first = entries[0];
    const last = entries[entries.length - 1];
    if (known && first && last) {
      if (known.size > 10_000) known.clear();
      known.set(first[0], firstIndex);
      known.set(last[0], firstIndex + entries.length - 1);
    }
    return { entries, count, firstIndex };
  }

  private knownPositions(node: string): Map<string, number> {
    let known = this.positions.get(node);
    if (!known) this.positions.set(node, (known = new Map()));
    return known;
  }

  async pageItemIds(node: string, page: PageRequest): Promise<Page<string> | undefined> {
    const known = this.knownPositions(node);
    const meta = await this.meta(node);
    const anchorKey = async (id: string): Promise<string | undefined> => {
      const stored = await this.json<StoredItem>(key('i', node, id));
      return stored && key('o', node, seqKey(stored.seq));
    };
    let afterKey: string | undefined;
    let beforeKey: string | undefined;
    if (page.after !== undefined) {
      afterKey = await anchorKey(page.after);
      if (afterKey === undefined) return undefined;
    } else if (page.before !== undefined) {
      beforeKey = page.before === '' ? '' : await anchorKey(page.before);
      if (beforeKey === undefined) return undefined;
    }
    const { entries, count, firstIndex } = await this.pageRange(
      rangeOf(key('o', node)),
      meta.count,
      { max: page.max, ...(afterKey !== undefined ? { afterKey } : {}), ...(beforeKey !== undefined ? { beforeKey } : {}), ...(page.index !== undefined ? { index: page.index } : {}) },
      known,
    );
    return { entries: entries.map(([, id]) => id), count, firstIndex };
  }

  async pageNodes(page: PageRequest): Promise<Page<NodeRecord>> {
    const count = await this.countBelow('n' + SEP, 'n' + SEP + '\uffff', false);
    const { entries, firstIndex } = await this.pageRange(rangeOf('n'), count, {
      max: page.max,
      ...(page.after !== undefined ? { afterKey: key('n', page.after) } : {}),
      ...(page.after === undefined && page.before !== undefined ? { beforeKey: page.before === '' ? '' : key('n', page.before) } : {}),
      ...(page.index !== undefined ? { index: page.index } : {}),
    });
    return { entries: entries.map(([, v]) => JSON.parse(v) as NodeRecord), count, firstIndex };
  }

  private async keysIn(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const k of this.db.keys({ gt: prefix + SEP, lt: prefix + SEP + '\uffff' })) keys.push(k);
    return keys;
  }

  async getNode(id: string): Promise<NodeRecord | undefined> {
    return this.json<NodeRecord>(key('n', id));
  }

  async listNodes(): Promise<NodeRecord[]> {
    const nodes: NodeRecord[] = [];
    for await (const [, value] of this.range('n')) nodes.push(JSON.parse(value) as NodeRecord);
    return nodes;
  }

  async putNode(node: NodeRecord): Promise<void> {
    await this.batch([{ type: 'put', key: key('n', node.id), value: JSON.stringify(node) }]);
  }

  async deleteNode(id: string): Promise<void> {
    await this.nodeLocks.run(id, async () => {
      const ops: BatchOp[] = [
        { type: 'del', key: key('n', id) },
        { type: 'del', key: key('m', id) },
      ];
      for await (const [k] of this.range(key('a', id))) {
        const jid = k.slice(key('a', id).length + 1);
        ops.push({ type: 'del', key: k }, { type: 'del', key: key('A', jid, id) });
      }
      for await (const [k, v] of this.range(key('s', id))) {
        const sub = JSON.parse(v) as Subscription;
        ops.push({ type: 'del', key: k }, { type: 'del', key: key('S', bareJid(sub.jid), id, sub.jid, sub.subid) });
      }
      for (const k of await this.keysIn(key('i', id))) ops.push({ type: 'del', key: k });
      for (const k of await this.keysIn(key('o', id))) ops.push({ type: 'del', key: k });
      for (const k of await this.keysIn(key('h', id))) ops.push({ type: 'del', key: k });
      ops.push({ type: 'del', key: key('H', id) });
      await this.batch(ops);
      this.positions.delete(id);
    });
  }

  async getAffiliations(node: string): Promise<Map<string, Affiliation>> {
    const out = new Map<string, Affiliation>();
    const prefixLength = key('a', node).length + 1;
    for await (const [k, v] of this.range(key('a', node))) out.set(k.slice(prefixLength), v as Affiliation);
    return out;
  }

  async getAffiliationsOf(jid: string): Promise<Array<{ node: string; affiliation: Affiliation }>> {
    const out: Array<{ node: string; affiliation: Affiliation }> = [];
    const prefixLength = key('A', jid).length + 1;
    for await (const [k, v] of this.range(key('A', jid))) out.push({ node: k.slice(prefixLength), affiliation: v as Affiliation });
    return out;
  }

  async setAffiliation(node: string, jid: string, affiliation: Affiliation): Promise<void> {
    if (affiliation === 'none') {
      await this.batch([
        { type: 'del', key: key('a', node, jid) },
        { type: 'del', key: key('A', jid, node) },
      ]);
    } else {
      await this.batch([
        { type: 'put', key: key('a', node, jid), value: affiliation },
        { type: 'put', key: key('A', jid, node), value: affiliation },
      ]);
    }
  }

  async getSubscriptions(node: string): Promise<Subscription[]> {
    const out: Subscription[] = [];
    for await (const [, v] of this.range(key('s', node))) out.push(JSON.parse(v) as Subscription);
    return out;
  }

  async getSubscriptionsOf(bare: string): Promise<Subscription[]> {
    const out: Subscription[] = [];
    for await (const [, v] of this.range(key('S', bare))) out.push(JSON.parse(v) as Subscription);
    return out;
  }

  async putSubscription(sub: Subscription): Promise<void> {
    const value = JSON.stringify(sub);
    await this.batch([
      { type: 'put', key: key('s', sub.node, sub.jid, sub.subid), value },
      { type: 'put', key: key('S', bareJid(sub.jid), sub.node, sub.jid, sub.subid), value },
    ]);
  }

  async deleteSubscription(node: string, jid: string, subid: string): Promise<void> {
    await this.batch([
      { type: 'del', key: key('s', node, jid, subid) },
      { type: 'del', key: key('S', bareJid(jid), node, jid, subid) },
    ]);
  }

  private async meta(node: string): Promise<ItemMeta> {
    return (await this.json<ItemMeta>(key('m', node))) ?? { seq: 0, count: 0 };
  }

  async putItem(node: string, item: Item, keep: number): Promise<string[]> {
    return this.nodeLocks.run(node, async () => {
      const meta = await this.meta(node);
      const ops: BatchOp[] = [];
      const previous = await this.json<StoredItem>(key('i', node, item.id));
      if (previous) ops.push({ type: 'del', key: key('o', node, seqKey(previous.seq)) });
      else meta.count += 1;
      meta.seq += 1;
      ops.push(
        { type: 'put', key: key('i', node, item.id), value: JSON.stringify({ seq: meta.seq, item } satisfies StoredItem) },
        { type: 'put', key: key('o', node, seqKey(meta.seq)), value: item.id },
      );
      const dropped = await this.collectTrim(node, meta, keep, ops, previous?.seq);
      ops.push({ type: 'put', key: key('m', node), value: JSON.stringify(meta) });
      await this.batch(ops);
      if (previous || dropped.length > 0) this.positions.delete(node);
      return dropped;
    });
  }

  /** Adds deletions of the oldest items beyond `keep` to ops and updates meta.count. */
  private async collectTrim(node: string, meta: ItemMeta, keep: number, ops: BatchOp[], skipSeq?: number): Promise<string[]> {
    const dropped: string[] = [];
    let excess = meta.count - keep;
    if (excess <= 0) return dropped;
    for await (const [k, id] of this.range(key('o', node))) {
      if (excess <= 0) break;
      if (skipSeq !== undefined && k === key('o', node, seqKey(skipSeq))) continue; // already replaced in this batch
      ops.push({ type: 'del', key: k }, { type: 'del', key: key('i', node, id) });
      dropped.push(id);
      excess -= 1;
    }
    meta.count -= dropped.length;
    return dropped;
  }

  async getItems(node: string, query: ItemQuery = {}): Promise<Item[]> {
    if (query.ids) {
      const found: StoredItem[] = [];
      const values = await this.db.getMany(query.ids.map((id) => key('i', node, id)));
      for (const value of values) if (value !== undefined) found.push(JSON.parse(value) as StoredItem);
      found.sort((a, b) => a.seq - b.seq);
      const items = found.map((s) => s.item);
      return query.max !== undefined ? (query.max <= 0 ? [] : items.slice(-query.max)) : items;
    }
    if (query.max !== undefined && query.max <= 0) return [];
    const ids: string[] = [];
    for await (const [, id] of this.range(key('o', node), { reverse: true, limit: query.max ?? -1 })) ids.push(id);
    ids.reverse();
    const values = await this.db.getMany(ids.map((id) => key('i', node, id)));
    const items: Item[] = [];
    for (const value of values) if (value !== undefined) items.push((JSON.parse(value) as StoredItem).item);
    return items;
  }

  async countItems(node: string): Promise<number> {
    return (await this.meta(node)).count;
  }

  async deleteItem(node: string, id: string): Promise<boolean> {
    return this.nodeLocks.run(node, async () => {
      const previous = await this.json<StoredItem>(key('i', node, id));
      if (!previous) return false;
      const meta = await this.meta(node);
      meta.count -= 1;
      await this.batch([
        { type: 'del', key: key('i', node, id) },
        { type: 'del', key: key('o', node, seqKey(previous.seq)) },
        { type: 'put', key: key('m', node), value: JSON.stringify(meta) },
      ]);
      this.positions.delete(node);
      return true;
    });
  }

  async trimItems(node: string, keep: number): Promise<string[]> {
    return this.nodeLocks.run(node, async () => {
      const meta = await this.meta(node);
      const ops: BatchOp[] = [];
      const dropped = await this.collectTrim(node, meta, keep, ops);
      if (dropped.length > 0) {
        ops.push({ type: 'put', key: key('m', node), value: JSON.stringify(meta) });
        await this.batch(ops);
        this.positions.delete(node);
      }
      return dropped;
    });
  }

  async purgeItems(node: string): Promise<void> {
    await this.nodeLocks.run(node, async () => {
      const meta = await this.meta(node);
      const ops: BatchOp[] = [];
      for (const k of await this.keysIn(key('i', node))) ops.push({ type: 'del', key: k });
      for (const k of await this.keysIn(key('o', node))) ops.push({ type: 'del', key: k });
      ops.push({ type: 'put', key: key('m', node), value: JSON.stringify({ seq: meta.seq, count: 0 }) });
      await this.batch(ops);
      this.positions.delete(node);
    });
  }

  async appendArchive(node: string, entry: Omit<ArchiveEntry, 'id'>, keep: number): Promise<string> {
    return this.nodeLocks.run(`H${SEP}${node}`, async () => {
      const meta = (await this.json<ItemMeta>(key('H', node))) ?? { seq: 0, count: 0 };
      meta.seq += 1;
      meta.count += 1;
      const id = archiveId(entry.stamp, meta.seq);
      const ops: BatchOp[] = [{ type: 'put', key: key('h', node, id), value: JSON.stringify({ ...entry, id }) }];
      const excess = meta.count - keep;
      if (excess > 0) {
        for await (const k of this.db.keys({ ...rangeOfGt(key('h', node)), limit: excess })) if (k !== key('h', node, id)) ops.push({ type: 'del', key: k });
        meta.count -= ops.length - 1;
      }
      ops.push({ type: 'put', key: key('H', node), value: JSON.stringify(meta) });
      await this.batch(ops);
      return id;
    });
  }

  async pageArchive(node: string, query: ArchiveQuery, page: PageRequest): Promise<Page<ArchiveEntry> | undefined> {
    const prefix = key('h', node);
    const named = namedArchiveIds(query, page);
    if (named.length > 0 && (await this.db.getMany(named.map((id) => prefix + SEP + id))).some((v) => v === undefined)) return undefined;
    const { above, below } = archiveBounds(query);
    if (query.ids) {
      // A few entries named by id: read them, then page in memory.
      const values = await this.db.getMany([...new Set(query.ids)].sort().map((id) => prefix + SEP + id));
      const selected = values.map((v) => JSON.parse(v as string) as ArchiveEntry).filter((e) => e.id > above && e.id < below);
      return pageOf(selected, page, (uid) => {
        const at = selected.findIndex((e) => e.id >= uid);
        return at === -1 ? selected.length - 0.5 : selected[at]?.id === uid ? at : at - 0.5;
      });
    }
    const range = { lo: prefix + SEP + above, hi: prefix + SEP + below };
    const whole = above === '' && below === '\uffff';
    const count = whole ? ((await this.json<ItemMeta>(key('H', node)))?.count ?? 0) : await this.countBelow(range.lo, range.hi, false);
    const { entries, firstIndex } = await this.pageRange(range, count, {
      max: page.max,
      ...(page.after !== undefined ? { afterKey: prefix + SEP + page.after } : {}),
      ...(page.after === undefined && page.before !== undefined ? { beforeKey: page.before === '' ? '' : prefix + SEP + page.before } : {}),
      ...(page.index !== undefined ? { index: page.index } : {}),
    });
    return { entries: entries.map(([, v]) => JSON.parse(v) as ArchiveEntry), count, firstIndex };
  }
}
