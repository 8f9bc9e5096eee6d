// The Store on an ordered key-value map (OrderedKv): the layout, bookkeeping and paging every
// key-value backend shares. LevelDB (level.ts) and CouchDB (couchdb.ts) only supply the map.
// Every change is one OrderedKv batch (atomic on LevelDB; see couchdb.ts for CouchDB): a
// publication writes its item, order key, order counters, archive entry and both metas at once.
//
// Key layout 2 ('\0' never occurs in JIDs, node ids or item ids, which are XML text):
//   _layout                            '2' (layout 1 had no such key; open() upgrades it once)
//   n\0<node>                          NodeRecord JSON
//   m\0<node>                          {seq, count} item bookkeeping
//   a\0<node>\0<jid>                   affiliation            A\0<jid>\0<node>  reverse index
//   s\0<node>\0<jid>\0<subid>          Subscription JSON      S\0<bare>\0<node>\0<jid>\0<subid>
//   i\0<node>\0<itemId>                {seq, item} JSON
//   o\0<node>\0<seq as 12 hex digits>  itemId (publication order)
//   c\0<node>\0<level>\0<bucket>       order keys per bucket of seqs (order-index.ts)   [layout 2]
//   h\0<node>\0<archive id>           ArchiveEntry JSON (history)   H\0<node>  {seq, count}
//   x\0<node>                          pubsub#item_expire seconds of a node that has one [layout 2]
//   L\0<node>\0<jid>\0<subid>          lease end (ms) of a leased subscription          [layout 2]
//   r\0<namespace>\0<key>              a state space's entry (Store.state: replication state)
//   l\0<node>                          the node's cluster-wide lock (node-lock.ts; shared maps only)
// x and L are the timer index start-up reads instead of every node (timerIndex).
//
// Paging item ids costs O(log n) reads to place the page (order-index.ts) plus the page itself.
// Nodes and archive entries are ordered by their own keys. Nodes are placed by counting:
// O(position); archive pages by the sequence number in each archive id (archivePage): O(page).
// Item and archive bookkeeping (m, H, counters) is cached per node, so a publication with a
// cached node reads one key (the item's previous version). On a map several processes share
// (OrderedKv.shared: CouchDB), every change to a node runs under its cluster-wide lock
// (exclusive, node-lock.ts), which also says when another process changed the node meanwhile
// (the cache is then dropped), and the map's changes feed drops what others changed (watch).

import { AsyncLocalStorage } from 'node:async_hooks';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../log.ts';
import type { Affiliation, ArchiveEntry, Item, NodeRecord, Subscription } from '../pubsub/types.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { all, type BatchOp, type OrderedKv } from './kv.ts';
import { NodeLocks } from './node-lock.ts';
import { applyDeltas, counterDeltas, counterKey, countersOf, levelsInUse, orderKey, orderKeyAt, positionOf, rebuildCounters, seqOfOrderKey } from './order-index.ts';
import {
  addLeaseEnd,
  archiveBounds,
  archiveId,
  bareJid,
  checkNamespace,
  itemExpiryOf,
  namedArchiveIds,
  pageOf,
  prefixEnd,
  type ArchiveQuery,
  type ItemQuery,
  type Page,
  type PageRequest,
  type StateSpace,
  type Store,
  type StoreChange,
  type TimerIndex,
} from './store.ts';

const SEP = '\0';
const key = (...parts: string[]): string => parts.join(SEP);
/** Items as archive entries stamped with their publish time (a loop, not map(): see src/util/hot-loops.md). */
const archiveEntries = (items: readonly Item[]): Array<Omit<ArchiveEntry, 'id'>> => {
  const out: Array<Omit<ArchiveEntry, 'id'>> = [];
  for (const item of items) out.push({ stamp: item.published, item });
  return out;
};
/**
 * Above every key that starts with `prefix` + SEP: the prefix and the code point after SEP.
 * Not `prefix + SEP + '\uffff'`: in UTF-8 byte order (LevelDB, and CouchDB's hex keys) a node or
 * item id starting above U+FFFF (an emoji) sorts after U+FFFF, out of such a range.
 */
const END = '\u0001';
/** The keys under a prefix, as exclusive bounds. */
const rangeOf = (prefix: string): { lo: string; hi: string } => ({ lo: prefix + SEP, hi: prefix + END });
const rangeOfGt = (prefix: string): { gt: string; lt: string } => ({ gt: prefix + SEP, lt: prefix + END });

interface ItemMeta {
  seq: number;
  count: number;
}
interface StoredItem {
  seq: number;
  item: Item;
}

/** A node's item and archive bookkeeping as last written. */
interface NodeBook {
  items: ItemMeta;
  archive: ItemMeta;
  /** Counted-bucket values (order-index.ts) read or written so far; absent: not known yet. */
  counters: Map<string, number>;
}

/** One change to a node's items and archive, staged for one batch. */
interface Change {
  ops: BatchOp[];
  items: ItemMeta;
  archive: ItemMeta;
  /** Order keys added (+1) or removed (-1), by sequence number. */
  moved: Array<[number, number]>;
  /** Every order key of the node goes (purge): the counters are deleted, not counted down. */
  purged?: boolean;
}

/** Names the store's layout; `hermod migrate` copies it with the rest. */
export const LAYOUT_KEY = '_layout';
/** 2: counted order index (c), timer index (x, L). Layout 1 (no _layout key) is upgraded at open. */
const LAYOUT = '2';
const UPGRADE_BATCH = 10_000;

export interface KvStoreOptions {
  /** Told about the one-time upgrade of a store written by an older Hermod; warned of a node lock lost (shared maps). */
  log?: Pick<Logger, 'info'> & Partial<Pick<Logger, 'warn'>>;
  /** The clock node locks are timed by (ms; tests move it). Default Date.now. */
  now?: () => number;
}

export class KvStore implements Store {
  private readonly nodeLocks = new KeyedMutex();
  /** Bookkeeping per node, cached. Only changes under the node's lock fill it; on a shared map it is dropped when another process changed the node. */
  private readonly books = new LRUCache<string, NodeBook>({ max: 1000 });
  private readonly log: Pick<Logger, 'info'> | undefined;
  /** Cluster-wide node locks, on a shared map only. */
  private readonly clusterLocks: NodeLocks | undefined;
  /** Exclusive sections of this process, one at a time per node (the cluster lock is taken inside). */
  private readonly sections = new KeyedMutex();
  /** The nodes whose exclusive section the current async context is in. */
  private readonly inside = new AsyncLocalStorage<ReadonlySet<string>>();
  /** Nodes deleted in the exclusive section under way (their lock document goes too). */
  private readonly deleted = new Set<string>();
  private readonly listeners = new Set<(change: StoreChange) => void>();
  private unwatch: (() => void) | undefined;
  /** See Store.exclusive: present on a shared map only. */
  readonly exclusive?: <T>(node: string, work: (stale: boolean) => Promise<T>) => Promise<T>;

  constructor(
    protected readonly db: OrderedKv,
    options: KvStoreOptions = {},
  ) {
    this.log = options.log;
    if (db.shared) {
      const log = options.log;
      this.clusterLocks = new NodeLocks(db.shared, options.now, (node, why) => log?.warn?.('cluster lock of a node lost: its writes are refused until it is taken again', { node, why }));
      this.exclusive = (node, work) => this.section(node, work);
    }
  }

  /** See Store.watch: fed by the map's changes feed (shared maps only). */
  watch(listener: (change: StoreChange) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Store.exclusive: the node's cluster-wide lock on a shared map; at once otherwise. */
  private section<T>(node: string, work: (stale: boolean) => Promise<T>): Promise<T> {
    const locks = this.clusterLocks;
    const inside = this.inside.getStore();
    if (!locks || inside?.has(node)) return work(false);
    return this.sections.run(node, () =>
      locks.run(
        node,
        (stale, stateStale) => {
          if (stale) this.books.delete(node);
          return this.inside.run(new Set([...(inside ?? []), node]), () => work(stateStale));
        },
        () => this.deleted.delete(node),
      ),
    );
  }

  /** Keys other processes changed: drop what is cached of them and tell the listeners. */
  private changedElsewhere(keys: string[]): void {
    for (const k of keys) {
      const parts = k.split(SEP);
      const [prefix, node] = parts;
      if (node === undefined) continue;
      if (prefix === 'l') this.clusterLocks?.changedElsewhere(node);
      else if ('mHcoih'.includes(prefix as string)) this.books.delete(node);
      else if (prefix === 'n' || prefix === 'a' || prefix === 's') this.tell({ kind: 'node', node });
      else if (prefix === 'r' && parts.length > 2) this.tell({ kind: 'state', namespace: node, key: parts.slice(2).join(SEP) });
    }
  }

  private tell(change: StoreChange): void {
    for (const listener of this.listeners) listener(change);
  }

  /** Opens the map; a store written in layout 1 gets its order counters and timer index built once (logged). */
  async open(): Promise<void> {
    await this.db.open();
    this.unwatch = await this.db.shared?.watch((keys) => this.changedElsewhere(keys));
    const layout = await this.db.get(LAYOUT_KEY);
    if (layout === LAYOUT) return;
    if (layout !== undefined) throw new Error(`store layout ${layout} is newer than this Hermod reads (${LAYOUT}): run a newer Hermod`);
    let empty = true;
    for await (const _ of this.db.keys({ limit: 1 })) empty = false;
    if (!empty) await this.upgrade();
    await this.db.batch([{ type: 'put', key: LAYOUT_KEY, value: LAYOUT }]);
  }

  /** Layout 1 -> 2: counters over every node's order keys, and the timer index. Rerunnable (puts only). */
  private async upgrade(): Promise<void> {
    const t0 = performance.now();
    const orderKeys = await rebuildCounters(this.db, (ops) => this.db.batch(ops));
    let ops: BatchOp[] = [];
    const flush = async (): Promise<void> => {
      await this.batch(ops);
      ops = [];
    };
    let expiringNodes = 0;
    for await (const [, value] of this.range('n')) {
      const node = JSON.parse(value) as NodeRecord;
      const expire = itemExpiryOf(node);
      if (expire === undefined) continue;
      ops.push({ type: 'put', key: key('x', node.id), value: String(expire) });
      expiringNodes++;
      if (ops.length >= UPGRADE_BATCH) await flush();
    }
    let leasedSubscriptions = 0;
    for await (const [, value] of this.range('s')) {
      const sub = JSON.parse(value) as Subscription;
      if (sub.options?.expire === undefined) continue;
      ops.push(leaseOp(sub));
      leasedSubscriptions++;
      if (ops.length >= UPGRADE_BATCH) await flush();
    }
    await flush();
    this.log?.info('store upgraded to layout 2: order counters and timer index built once', { orderKeys, expiringNodes, leasedSubscriptions, ms: Math.round(performance.now() - t0) });
  }

  async close(): Promise<void> {
    await this.sections.idle();
    await this.nodeLocks.idle();
    await this.clusterLocks?.close();
    this.unwatch?.();
    this.listeners.clear();
    this.books.clear();
    await this.db.close();
  }

  /** A state space: the map's keys under r\0<namespace>\0, in one batch per write as everything else. */
  state(namespace: string): StateSpace {
    checkNamespace(namespace);
    const base = key('r', namespace) + SEP;
    const db = this.db;
    return {
      get: (k) => db.get(base + k),
      getMany: async (keys) => {
        if (keys.length === 0) return [];
        const full: string[] = []; // loops, not map(): see src/util/hot-loops.md
        for (const k of keys) full.push(base + k);
        return db.getMany(full);
      },
      // Not fenced by the node locks of the section it may run in: a state space (the journal, the
      // relay, replication state) is no node's, and a lost node lock must not stall its writes.
      batch: (ops) => {
        const full: BatchOp[] = [];
        for (const op of ops) full.push({ ...op, key: base + op.key });
        return this.batch(full, false);
      },
      swap: (k, expected, next) => this.swap(base + k, expected, next),
      async *range(prefix, options = {}) {
        for await (const [k, v] of db.entries({ gte: base + prefix, lt: prefixEnd(base + prefix), limit: options.limit ?? -1 })) yield [k.slice(base.length), v];
      },
      watch: (listener) =>
        this.watch((change) => {
          if (change.kind === 'state' && change.namespace === namespace) listener(change.key);
        }),
    };
  }

  /** Compare-and-set of one key (StateSpace.swap): the map's own check, else under this store's lock. */
  private swap(k: string, expected: string | undefined, next: string | undefined): Promise<boolean> {
    const db = this.db;
    if (db.swap) return db.swap(k, expected, next);
    return this.nodeLocks.run(`\0swap\0${k}`, async () => {
      if ((await db.get(k)) !== expected) return false;
      await db.batch([next === undefined ? { type: 'del', key: k } : { type: 'put', key: k, value: next }]);
      return true;
    });
  }

  /**
   * Writes one batch; `fenced` (node data), inside exclusive sections, only while their node locks
   * are surely this process's (NodeLocks.fence: rejects with LockLostError otherwise).
   */
  private async batch(ops: BatchOp[], fenced = true): Promise<void> {
    if (ops.length === 0) return;
    const locks = this.clusterLocks;
    if (locks && fenced) for (const node of this.inside.getStore() ?? []) await locks.fence(node);
    await this.db.batch(ops);
  }

  private async json<T>(k: string): Promise<T | undefined> {
    const value = await this.db.get(k);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  /** Entries whose key starts with prefix + SEP, in key order. */
  private async *range(prefix: string, options: { reverse?: boolean; limit?: number } = {}): AsyncGenerator<[string, string]> {
    for await (const entry of this.db.entries({ ...rangeOfGt(prefix), reverse: options.reverse ?? false, limit: options.limit ?? -1 })) yield entry;
  }

  /** Number of keys above `lo` and below `bound` (or up to it, inclusive). O(keys counted). */
  private async countBelow(lo: string, bound: string, inclusive: boolean): Promise<number> {
    let n = 0;
    for await (const _ of this.db.keys(inclusive ? { gt: lo, lte: bound } : { gt: lo, lt: bound })) n++;
    return n;
  }

  /**
   * One page of the keys strictly between `lo` and `hi` (`count` of them), for sets ordered by
   * their own keys (nodes, archive entries). `after`/`before` are keys (need not exist; ''
   * before means the end). The page costs O(page) reads plus, for the position of an
   * after/before/index page, O(position) keys counted.
   */
  private async pageRange({ lo, hi }: { lo: string; hi: string }, count: number, page: PageRequest & { afterKey?: string; beforeKey?: string }): Promise<Page<[string, string]>> {
    const max = Math.max(0, page.max);
    if (max === 0) return { entries: [], count, firstIndex: 0 };
    let entries: Array<[string, string]>;
    let firstIndex: number;
    if (page.afterKey !== undefined) {
      const from = page.afterKey > lo ? page.afterKey : lo;
      entries = await all(this.db.entries({ gt: from, lt: hi, limit: max }));
      firstIndex = entries.length > 0 ? await this.countBelow(lo, from, true) : 0;
    } else if (page.beforeKey !== undefined) {
      const bound = page.beforeKey === '' || page.beforeKey > hi ? hi : page.beforeKey;
      entries = (await all(this.db.entries({ gt: lo, lt: bound, limit: max, reverse: true }))).reverse();
      firstIndex = (page.beforeKey === '' ? count : entries.length > 0 ? await this.countBelow(lo, bound, false) : 0) - entries.length;
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
    return { entries, count, firstIndex };
  }

  /** The sequence number of an item in the node, or undefined when it is not there. */
  private async seqOf(node: string, id: string): Promise<number | undefined> {
    return (await this.json<StoredItem>(key('i', node, id)))?.seq;
  }

  /**
   * Item ids in publication order, one page. O(log n) reads to place the page (order-index.ts:
   * the anchor's position, or the key at an index) plus O(page) to read it; the first and last
   * pages need no placing.
   */
  async pageItemIds(node: string, page: PageRequest): Promise<Page<string> | undefined> {
    const count = await this.countItems(node);
    const max = Math.max(0, page.max);
    const { gt, lt } = rangeOfGt(key('o', node));
    const ids = (entries: Array<[string, string]>): string[] => entries.map(([, id]) => id);
    if (page.after !== undefined || (page.before !== undefined && page.before !== '')) {
      const anchor = await this.seqOf(node, (page.after ?? page.before) as string);
      if (anchor === undefined) return undefined;
      if (max === 0) return { entries: [], count, firstIndex: 0 };
      const at = orderKey(node, anchor);
      const entries = page.after !== undefined ? await all(this.db.entries({ gt: at, lt, limit: max })) : (await all(this.db.entries({ gt, lt: at, limit: max, reverse: true }))).reverse();
      if (entries.length === 0) return { entries: [], count, firstIndex: 0 };
      const position = await positionOf(this.db, node, anchor);
      return { entries: ids(entries), count, firstIndex: page.after !== undefined ? position + 1 : position - entries.length };
    }
    if (max === 0) return { entries: [], count, firstIndex: 0 };
    if (page.before === '') {
      const entries = (await all(this.db.entries({ gt, lt, limit: max, reverse: true }))).reverse();
      return { entries: ids(entries), count, firstIndex: count - entries.length };
    }
    const index = Math.max(0, page.index ?? 0);
    const from = index === 0 ? undefined : index < count ? await orderKeyAt(this.db, node, index, await this.maxSeq(node)) : undefined;
    if (index > 0 && from === undefined) return { entries: [], count, firstIndex: index };
    const entries = await all(this.db.entries(from === undefined ? { gt, lt, limit: max } : { gte: from, lt, limit: max }));
    return { entries: ids(entries), count, firstIndex: index };
  }

  async pageNodes(page: PageRequest): Promise<Page<NodeRecord>> {
    const count = await this.countBelow('n' + SEP, 'n' + END, false);
    const { entries, firstIndex } = await this.pageRange(rangeOf('n'), count, {
      max: page.max,
      ...(page.after !== undefined ? { afterKey: key('n', page.after) } : {}),
      ...(page.after === undefined && page.before !== undefined ? { beforeKey: page.before === '' ? '' : key('n', page.before) } : {}),
      ...(page.index !== undefined ? { index: page.index } : {}),
    });
    return { entries: entries.map(([, v]) => JSON.parse(v) as NodeRecord), count, firstIndex };
  }

  private async keysIn(prefix: string): Promise<string[]> {
    return all(this.db.keys(rangeOfGt(prefix)));
  }

  async getNode(id: string): Promise<NodeRecord | undefined> {
    return this.json<NodeRecord>(key('n', id));
  }

  async listNodes(): Promise<NodeRecord[]> {
    const nodes: NodeRecord[] = [];
    for await (const [, value] of this.range('n')) nodes.push(JSON.parse(value) as NodeRecord);
    return nodes;
  }

  /** Writes the record and its timer-index entry (x: item expiry) in one batch. */
  async putNode(node: NodeRecord): Promise<void> {
    const expire = itemExpiryOf(node);
    await this.exclusiveBatch(node.id, [
      { type: 'put', key: key('n', node.id), value: JSON.stringify(node) },
      expire === undefined ? { type: 'del', key: key('x', node.id) } : { type: 'put', key: key('x', node.id), value: String(expire) },
    ]);
  }

  /** One batch of a node's record, affiliation or subscription keys, under its lock (section), which then hands on a fresh state token. */
  private exclusiveBatch(node: string, ops: BatchOp[]): Promise<void> {
    return this.section(node, () => {
      this.clusterLocks?.touch(node);
      return this.batch(ops);
    });
  }

  async deleteNode(id: string): Promise<void> {
    await this.section(id, () =>
      this.nodeLocks.run(id, async () => {
        const ops: BatchOp[] = [
          { type: 'del', key: key('n', id) },
          { type: 'del', key: key('m', id) },
          { type: 'del', key: key('H', id) },
          { type: 'del', key: key('x', id) },
        ];
        for await (const [k] of this.range(key('a', id))) {
          const jid = k.slice(key('a', id).length + 1);
          ops.push({ type: 'del', key: k }, { type: 'del', key: key('A', jid, id) });
        }
        for await (const [k, v] of this.range(key('s', id))) {
          const sub = JSON.parse(v) as Subscription;
          ops.push({ type: 'del', key: k }, { type: 'del', key: key('S', bareJid(sub.jid), id, sub.jid, sub.subid) }, { type: 'del', key: leaseKey(sub) });
        }
        for (const prefix of ['i', 'o', 'h']) for (const k of await this.keysIn(key(prefix, id))) ops.push({ type: 'del', key: k });
        for await (const k of this.db.keys(countersOf(id))) ops.push({ type: 'del', key: k });
        try {
          await this.batch(ops);
          if (this.clusterLocks) this.deleted.add(id);
        } finally {
          this.books.delete(id);
        }
      }),
    );
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
      await this.exclusiveBatch(node, [
        { type: 'del', key: key('a', node, jid) },
        { type: 'del', key: key('A', jid, node) },
      ]);
    } else {
      await this.exclusiveBatch(node, [
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

  /** Writes the subscription, its reverse index and its timer-index entry (L: lease end) in one batch. */
  async putSubscription(sub: Subscription): Promise<void> {
    const value = JSON.stringify(sub);
    await this.exclusiveBatch(sub.node, [
      { type: 'put', key: key('s', sub.node, sub.jid, sub.subid), value },
      { type: 'put', key: key('S', bareJid(sub.jid), sub.node, sub.jid, sub.subid), value },
      leaseOp(sub),
    ]);
  }

  async deleteSubscription(node: string, jid: string, subid: string): Promise<void> {
    await this.exclusiveBatch(node, [
      { type: 'del', key: key('s', node, jid, subid) },
      { type: 'del', key: key('S', bareJid(jid), node, jid, subid) },
      { type: 'del', key: leaseKey({ node, jid, subid }) },
    ]);
  }

  /** Reads the timer index only (x and L keys): O(nodes with item expiry + leased subscriptions). */
  async timerIndex(): Promise<TimerIndex> {
    const itemExpiry = new Map<string, number>();
    for await (const [k, v] of this.range('x')) itemExpiry.set(k.slice(2), Number(v));
    const leaseEnds = new Map<string, number>();
    for await (const [k, v] of this.range('L')) addLeaseEnd(leaseEnds, k.slice(2, k.indexOf(SEP, 2)), Number(v));
    return { itemExpiry, leaseEnds };
  }

  // ---- items and archive: one batch per change ---------------------------------------------

  /**
   * Runs `work` under the node's lock on a copy of its bookkeeping (loaded with one read when
   * not cached, together with `reads`), then writes everything it staged — items, order keys,
   * their counters, archive entries and both metas — as one batch. The cache takes the new
   * bookkeeping only once the batch is written; a failed batch drops it (reread next time).
   */
  private change<T>(node: string, reads: string[], work: (change: Change, read: Array<string | undefined>) => Promise<T>): Promise<T> {
    return this.section(node, () =>
      this.nodeLocks.run(node, async () => {
        let book = this.books.get(node);
        let read: Array<string | undefined>;
        if (book) read = reads.length > 0 ? await this.db.getMany(reads) : [];
        else {
          const [m, h, ...rest] = await this.db.getMany([key('m', node), key('H', node), ...reads]);
          book = { items: m ? (JSON.parse(m) as ItemMeta) : { seq: 0, count: 0 }, archive: h ? (JSON.parse(h) as ItemMeta) : { seq: 0, count: 0 }, counters: new Map() };
          read = rest;
        }
        const change: Change = { ops: [], items: { ...book.items }, archive: { ...book.archive }, moved: [] };
        const result = await work(change, read);
        const counters = await this.countersAfter(node, book, change);
        if (change.items.seq !== book.items.seq || change.items.count !== book.items.count) change.ops.push({ type: 'put', key: key('m', node), value: JSON.stringify(change.items) });
        if (change.archive.seq !== book.archive.seq) change.ops.push({ type: 'put', key: key('H', node), value: JSON.stringify(change.archive) });
        try {
          await this.batch(change.ops);
        } catch (err) {
          this.books.delete(node);
          throw err;
        }
        if (change.purged) book.counters.clear();
        for (const [k, value] of counters) {
          if (value > 0) book.counters.set(k, value);
          else book.counters.delete(k);
        }
        book.items = change.items;
        book.archive = change.archive;
        this.books.set(node, book);
        return result;
      }),
    );
  }

  /** Stages the counter updates of the order keys a change moved; reads those not cached (one getMany). */
  private async countersAfter(node: string, book: NodeBook, change: Change): Promise<Map<string, number>> {
    if (change.purged) {
      for await (const k of this.db.keys(countersOf(node))) change.ops.push({ type: 'del', key: k });
      return new Map();
    }
    // Only the levels in use are counted (order-index.ts). A level this change brings into use
    // starts from bucket 0 holding every key the node had: known, not read (an earlier Hermod
    // may have left a counter there that was not kept up).
    const levels = levelsInUse(change.items.seq);
    const deltas = counterDeltas(node, change.moved, levels);
    const read = new Map<string, number>();
    for (let level = levelsInUse(book.items.seq) + 1; level <= levels; level++) {
      const bucket0 = counterKey(node, level, 0);
      read.set(bucket0, book.items.count);
      if (!deltas.has(bucket0)) deltas.set(bucket0, 0);
    }
    const unknown = [...deltas.keys()].filter((k) => !book.counters.has(k) && !read.has(k));
    if (unknown.length > 0) (await this.db.getMany(unknown)).forEach((v, i) => read.set(unknown[i] as string, v === undefined ? 0 : Number(v)));
    return applyDeltas(deltas, (k) => read.get(k) ?? book.counters.get(k) ?? 0, change.ops);
  }

  /**
   * Stages publications of `items` (in order) as the same number of publishItem calls would
   * leave the node, in one change: each id stored once, at the position of its last
   * publication (a stored one with that id is replaced: `previous`, its stored value, as read
   * for the batch's distinct ids), the oldest beyond `keep` dropped (stored ones first, then the
   * batch's own oldest, which are then not written at all). Returns the ids dropped.
   */
  private async stageItems(node: string, change: Change, items: Item[], previous: ReadonlyMap<string, string | undefined>, keep: number): Promise<string[]> {
    const last = new Map<string, number>();
    items.forEach((item, i) => last.set(item.id, i));
    const replaced = new Set<number>();
    for (const id of last.keys()) {
      const stored = previous.get(id);
      if (stored === undefined) continue;
      const seq = (JSON.parse(stored) as StoredItem).seq;
      this.stageUnorder(node, change, seq);
      replaced.add(seq);
      change.items.count -= 1;
    }
    const finals = items.filter((item, i) => last.get(item.id) === i);
    const dropped = await this.stageTrim(node, change, Math.max(0, keep - finals.length), replaced);
    const unwritten = Math.max(0, finals.length - keep);
    for (const [i, item] of finals.entries()) {
      if (i < unwritten) {
        if (previous.get(item.id) !== undefined) change.ops.push({ type: 'del', key: key('i', node, item.id) });
        dropped.push(item.id);
        continue;
      }
      change.items.count += 1;
      change.items.seq += 1;
      change.ops.push(
        { type: 'put', key: key('i', node, item.id), value: JSON.stringify({ seq: change.items.seq, item } satisfies StoredItem) },
        { type: 'put', key: orderKey(node, change.items.seq), value: item.id },
      );
      change.moved.push([change.items.seq, 1]);
    }
    return dropped;
  }

  /** Stages the removal of an order key. */
  private stageUnorder(node: string, change: Change, seq: number): void {
    change.ops.push({ type: 'del', key: orderKey(node, seq) });
    change.moved.push([seq, -1]);
  }

  /** Stages the removal of the oldest stored items beyond `keep` (skipping the order keys in `skip`, replaced in this change). */
  private async stageTrim(node: string, change: Change, keep: number, skip: ReadonlySet<number> = new Set()): Promise<string[]> {
    const dropped: string[] = [];
    let excess = change.items.count - keep;
    if (excess <= 0) return dropped;
    for await (const [k, id] of this.db.entries({ ...rangeOfGt(key('o', node)), limit: excess + skip.size })) {
      if (excess <= 0) break;
      const seq = seqOfOrderKey(k);
      if (skip.has(seq)) continue; // already replaced in this change
      this.stageUnorder(node, change, seq);
      change.ops.push({ type: 'del', key: key('i', node, id) });
      dropped.push(id);
      excess -= 1;
    }
    change.items.count -= dropped.length;
    return dropped;
  }

  /**
   * Stages archive entries (in order) and the removal of the oldest entries beyond `keep`
   * (stored ones first, then the oldest of these, which are then not written); returns their ids.
   */
  private async stageArchive(node: string, change: Change, entries: Array<Omit<ArchiveEntry, 'id'>>, keep: number): Promise<string[]> {
    const meta = change.archive;
    const ids: string[] = []; // a loop, not map(): see src/util/hot-loops.md
    for (const entry of entries) ids.push(archiveId(entry.stamp, (meta.seq += 1)));
    const excess = meta.count + entries.length - keep;
    if (excess > 0 && meta.count > 0) {
      for await (const k of this.db.keys({ ...rangeOfGt(key('h', node)), limit: Math.min(excess, meta.count) })) {
        change.ops.push({ type: 'del', key: k });
        meta.count -= 1;
      }
    }
    const unwritten = Math.max(0, meta.count + entries.length - keep);
    for (const [i, entry] of entries.entries()) {
      if (i < unwritten) continue;
      change.ops.push({ type: 'put', key: key('h', node, ids[i] as string), value: JSON.stringify({ ...entry, id: ids[i] }) });
      meta.count += 1;
    }
    return ids;
  }

  /** stageArchive of one entry; returns its id. */
  private async stageArchiveOne(node: string, change: Change, entry: Omit<ArchiveEntry, 'id'>, keep: number): Promise<string> {
    return (await this.stageArchive(node, change, [entry], keep))[0] as string;
  }

  /** One batch, one read (the item's previous version) when the node's bookkeeping is cached. */
  async publishItem(node: string, item: Item, options: { keep: number; archive?: { keep: number } }): Promise<{ dropped: string[]; archiveId?: string }> {
    const { dropped, archiveIds } = await this.publishMany(node, [item], options);
    return { dropped, ...(archiveIds[0] !== undefined ? { archiveId: archiveIds[0] } : {}) };
  }

  /** One batch, one read (the previous versions of the distinct ids) when the node's bookkeeping is cached. */
  async publishMany(node: string, items: Item[], options: { keep: number; archive?: { keep: number } }): Promise<{ dropped: string[]; archiveIds: string[] }> {
    if (items.length === 0) return { dropped: [], archiveIds: [] };
    // Loops, not map() callbacks, on this path that runs for every publication (src/util/hot-loops.md).
    const distinct = new Set<string>();
    for (const item of items) distinct.add(item.id);
    const ids = [...distinct];
    const itemKeys: string[] = [];
    for (const id of ids) itemKeys.push(key('i', node, id));
    return this.change(node, itemKeys, async (change, read) => {
      const previous = new Map<string, string | undefined>();
      for (let i = 0; i < ids.length; i++) previous.set(ids[i] as string, read[i]);
      const dropped = await this.stageItems(node, change, items, previous, options.keep);
      if (!options.archive) return { dropped, archiveIds: [] };
      return { dropped, archiveIds: await this.stageArchive(node, change, archiveEntries(items), options.archive.keep) };
    });
  }

  /**
   * Bulk load (not part of the Store interface; the benchmark's direct fill uses it): these
   * publications, oldest first, as one change and one batch, leaving exactly the keys that
   * publishItem would leave one by one (items, order keys, counters, archive entries, metas).
   * Throws Error, writing nothing, when an id repeats, is already in the node, or the node or its
   * archive would go beyond `keep` (those need publishItem's replacing and trimming).
   */
  async publishItems(node: string, items: Item[], options: { keep: number; archive?: { keep: number } }): Promise<void> {
    if (new Set(items.map((i) => i.id)).size !== items.length) throw new Error(`publishItems: repeated item id in the batch for node '${node}'`);
    await this.change(node, items.map((i) => key('i', node, i.id)), async (change, previous) => {
      if (previous.some((v) => v !== undefined)) throw new Error(`publishItems: an item id is already in node '${node}'`);
      const archived = options.archive ? change.archive.count + items.length : 0;
      if (change.items.count + items.length > options.keep || (options.archive && archived > options.archive.keep)) throw new Error(`publishItems: node '${node}' would go beyond keep`);
      await this.stageItems(node, change, items, new Map(), options.keep);
      if (options.archive) await this.stageArchive(node, change, archiveEntries(items), options.archive.keep);
    });
  }

  async putItem(node: string, item: Item, keep: number): Promise<string[]> {
    return (await this.publishItem(node, item, { keep })).dropped;
  }

  async retractItems(node: string, ids: string[], options: { archive?: { stamp: number; keep: number } } = {}): Promise<{ retracted: string[]; archiveId?: string }> {
    const unique = [...new Set(ids)];
    return this.change(node, unique.map((id) => key('i', node, id)), async (change, values) => {
      const found: StoredItem[] = [];
      for (const value of values) if (value !== undefined) found.push(JSON.parse(value) as StoredItem);
      found.sort((a, b) => a.seq - b.seq);
      for (const { seq, item } of found) {
        change.ops.push({ type: 'del', key: key('i', node, item.id) });
        this.stageUnorder(node, change, seq);
      }
      change.items.count -= found.length;
      const retracted = found.map((s) => s.item.id);
      if (!options.archive || retracted.length === 0) return { retracted };
      return { retracted, archiveId: await this.stageArchiveOne(node, change, { stamp: options.archive.stamp, retracted }, options.archive.keep) };
    });
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

  /** From the cached bookkeeping, else one read. */
  async countItems(node: string): Promise<number> {
    return (await this.itemMeta(node)).count;
  }

  private async itemMeta(node: string): Promise<ItemMeta> {
    return this.books.get(node)?.items ?? (await this.json<ItemMeta>(key('m', node))) ?? { seq: 0, count: 0 };
  }

  /** The node's highest sequence number so far. */
  private async maxSeq(node: string): Promise<number> {
    return (await this.itemMeta(node)).seq;
  }

  async deleteItem(node: string, id: string): Promise<boolean> {
    return (await this.retractItems(node, [id])).retracted.length > 0;
  }

  async trimItems(node: string, keep: number): Promise<string[]> {
    return this.change(node, [], (change) => this.stageTrim(node, change, keep));
  }

  async purgeItems(node: string, options: { archive?: { stamp: number; keep: number } } = {}): Promise<{ archiveId?: string }> {
    return this.change(node, [], async (change) => {
      for (const prefix of ['i', 'o']) for (const k of await this.keysIn(key(prefix, node))) change.ops.push({ type: 'del', key: k });
      change.items.count = 0;
      change.purged = true;
      return options.archive ? { archiveId: await this.stageArchiveOne(node, change, { stamp: options.archive.stamp, purged: true }, options.archive.keep) } : {};
    });
  }

  async appendArchive(node: string, entry: Omit<ArchiveEntry, 'id'>, keep: number): Promise<string> {
    return this.change(node, [], (change) => this.stageArchiveOne(node, change, entry, keep));
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
    const count = whole ? (this.books.get(node)?.archive.count ?? (await this.json<ItemMeta>(key('H', node)))?.count ?? 0) : await this.archiveCount(range.lo, range.hi);
    if (page.after === undefined && page.before === undefined && (page.index ?? 0) > 0) {
      // A page at an index (XEP-0059 §2.5): placed by skipping keys, O(index).
      const { entries, firstIndex } = await this.pageRange(range, count, { max: page.max, index: page.index as number });
      return { entries: entries.map(([, v]) => JSON.parse(v) as ArchiveEntry), count, firstIndex };
    }
    // After or before an entry, the last page (before ''), or the first page.
    const at = page.after !== undefined ? { afterKey: prefix + SEP + page.after } : page.before !== undefined ? { beforeKey: page.before === '' ? range.hi : prefix + SEP + page.before } : { afterKey: range.lo };
    const { entries, firstIndex, complete } = await this.archivePage(range, count, at, page.max);
    return { entries: entries.map(([, v]) => JSON.parse(v) as ArchiveEntry), count, firstIndex, complete };
  }

  /**
   * How many archive entries lie strictly between `lo` and `hi` (a time- or id-bounded query):
   * the distance in sequence numbers between the range's first and last entry (see archivePage),
   * two reads instead of counting the range.
   */
  private async archiveCount(lo: string, hi: string): Promise<number> {
    const [first] = await all(this.db.keys({ gt: lo, lt: hi, limit: 1 }));
    if (first === undefined) return 0;
    const [last] = await all(this.db.keys({ gt: lo, lt: hi, limit: 1, reverse: true }));
    const n = archiveSeq(last) - archiveSeq(first) + 1;
    return Number.isFinite(n) && n >= 1 ? n : this.countBelow(lo, hi, false);
  }

  /**
   * One page of a node's archive after (or before) an entry, placed without counting the keys
   * before it: counting made a walk through a long history (a partner reading it back page by
   * page) quadratic — 100 000 entries read at ~225 a second. An archive id carries the node's
   * archive sequence number (archiveId), contiguous from the oldest entry kept (entries are
   * only appended and trimmed from the oldest), so an entry's index is its distance in sequence
   * numbers from the first entry of the range: exact while the clock never went back (ids sort
   * by time first), approximate otherwise, as XEP-0059 §2.2 allows. One entry past the page is
   * read to say exactly whether it reaches the end (the start, for a `before` page): `complete`.
   * O(page) reads.
   */
  private async archivePage({ lo, hi }: { lo: string; hi: string }, count: number, at: { afterKey: string } | { beforeKey: string }, max: number): Promise<Page<[string, string]> & { complete: boolean }> {
    if (max <= 0) return { entries: [], count, firstIndex: 0, complete: count === 0 };
    let entries: Array<[string, string]>;
    let complete: boolean;
    if ('afterKey' in at) {
      const read = await all(this.db.entries({ gt: at.afterKey > lo ? at.afterKey : lo, lt: hi, limit: max + 1 }));
      complete = read.length <= max;
      entries = read.slice(0, max);
    } else {
      const read = await all(this.db.entries({ gt: lo, lt: at.beforeKey < hi ? at.beforeKey : hi, limit: max + 1, reverse: true }));
      complete = read.length <= max;
      entries = read.slice(0, max).reverse();
    }
    const firstKey = entries[0]?.[0];
    if (firstKey === undefined) return { entries, count, firstIndex: 0, complete };
    // A page that reaches the end is the range's last entries; one that reaches the start, its
    // first: exact whatever the clock did (a client counts on it to know how many results to wait for).
    if (complete) return { entries, count, firstIndex: 'afterKey' in at ? Math.max(0, count - entries.length) : 0, complete };
    const [rangeFirst] = await all(this.db.keys({ gt: lo, lt: hi, limit: 1 }));
    const distance = archiveSeq(firstKey) - archiveSeq(rangeFirst);
    // An id not of archiveId's form (none are written so): count, as before.
    const firstIndex = Number.isFinite(distance) ? Math.min(Math.max(0, distance), Math.max(0, count - entries.length)) : await this.countBelow(lo, firstKey, false);
    return { entries, count, firstIndex, complete };
  }
}

/** The archive sequence number an archive entry's key ends with (archiveId); NaN for another form. */
function archiveSeq(k: string | undefined): number {
  return k !== undefined && /-[0-9a-f]{10}$/.test(k) ? parseInt(k.slice(-10), 16) : NaN;
}

/** The timer-index key of a subscription's lease. */
function leaseKey(sub: Pick<Subscription, 'node' | 'jid' | 'subid'>): string {
  return key('L', sub.node, sub.jid, sub.subid);
}

/** Puts the subscription's lease end in the timer index, or removes it when it has none. */
function leaseOp(sub: Subscription): BatchOp {
  const end = sub.options?.expire;
  return end === undefined ? { type: 'del', key: leaseKey(sub) } : { type: 'put', key: leaseKey(sub), value: String(end) };
}
