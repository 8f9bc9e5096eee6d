// The Store interface: durable state of the pub/sub service. Every backend (memory for unit
// tests, LevelDB embedded by default, CouchDB later) implements it and passes the same contract
// suite (test/unit/store-contract.ts). A write resolves only once it is durable for the backend.
// Stores hold no policy: limits, permissions and notifications are the service's job.
// Beside the pub/sub data, a store keeps named state spaces (Store.state): small ordered
// key-value maps for the state of other parts (replication checkpoints and echo memory), so
// every durable byte of Hermod lives in the one backend and `hermod migrate` moves all of it.

import type { Affiliation, ArchiveEntry, Item, NodeRecord, Subscription } from '../pubsub/types.ts';

export interface ItemQuery {
  /** Only these ids (in publication order; missing ones are skipped). */
  ids?: string[];
  /** The `max` most recent items (still returned oldest first). */
  max?: number;
}

/**
 * One page of an ordered result set (XEP-0059 semantics, without the wire format). Entries are
 * addressed by their UID (an item id, a node id). At most one of after/before/index is used.
 */
export interface PageRequest {
  /** Most entries to return (0: only count). */
  max: number;
  /** The entries right after this UID. */
  after?: string;
  /** The entries right before this UID; '' asks for the last page. */
  before?: string;
  /** The page starting at this position (0-based). */
  index?: number;
}

export interface Page<T> {
  entries: T[];
  /** Size of the whole result set. */
  count: number;
  /** Position of entries[0] in the whole set (meaningless when entries is empty). */
  firstIndex: number;
  /**
   * Whether the page reaches the end of the set in its direction (its last entry for a forward
   * page, its first for a `before` page), known exactly where `firstIndex` and `count` may be
   * approximate (XEP-0059 §2.2; the LevelDB/CouchDB archive). Undefined: derive it from
   * `firstIndex` and `count`, which are then exact.
   */
  complete?: boolean;
}

/** Which part of a node's archive a query covers (all bounds optional). */
export interface ArchiveQuery {
  /** Entries at or after this time, ms since epoch. */
  start?: number;
  /** Entries at or before this time. */
  end?: number;
  /** Entries after this archive id (exclusive). */
  afterId?: string;
  /** Entries before this archive id (exclusive). */
  beforeId?: string;
  /** Only these entries. */
  ids?: string[];
}

/** The archive ids a query and page name, which must exist in the archive (XEP-0313 §4.1.4). */
export function namedArchiveIds(query: ArchiveQuery, page: PageRequest): string[] {
  const named = [...(query.ids ?? [])];
  if (query.afterId !== undefined) named.push(query.afterId);
  if (query.beforeId !== undefined) named.push(query.beforeId);
  if (page.after !== undefined) named.push(page.after);
  if (page.before) named.push(page.before);
  return named;
}

/** A write to a state space: put a value, or delete a key (absent keys are skipped). */
export type StateOp = { type: 'put'; key: string; value: string } | { type: 'del'; key: string };

/**
 * A named, ordered key-value map inside a store (see Store.state): string keys ordered as their
 * UTF-8 bytes, string values. A write resolves once it is durable for the backend.
 */
export interface StateSpace {
  get(key: string): Promise<string | undefined>;
  /** The values of these keys, in the same order (undefined for absent keys). */
  getMany(keys: string[]): Promise<Array<string | undefined>>;
  /** Applies every op as one store write (one atomic batch on LevelDB, one `_bulk_docs` on CouchDB). */
  batch(ops: StateOp[]): Promise<void>;
  /** Entries whose key starts with `prefix` ('' for all), in key order, at most `limit` (absent: all). */
  range(prefix: string, options?: { limit?: number }): AsyncIterable<[string, string]>;
  /**
   * Compare-and-set of one key, checked by the store against concurrent writers (other Hermod
   * processes on the same CouchDB: the document's `_rev`; one process: atomically in-process).
   * Writes `next` (undefined: deletes the key) only if the key's current value is `expected`
   * (undefined: absent). Resolves to true when written, false when the value differed or another
   * writer won the race (nothing written then). Rejects with the backend's error.
   */
  swap(key: string, expected: string | undefined, next: string | undefined): Promise<boolean>;
  /** Shared stores: calls `listener` with the keys other processes changed (Store.watch); returns the function that stops. */
  watch?(listener: (key: string) => void): () => void;
}

export interface Store {
  open(): Promise<void>;
  close(): Promise<void>;

  /**
   * The state space `namespace` (a non-empty name without '\0'; throws Error otherwise): kept
   * apart from the pub/sub data and from other spaces, usable while the store is open.
   */
  state(namespace: string): StateSpace;

  getNode(id: string): Promise<NodeRecord | undefined>;
  listNodes(): Promise<NodeRecord[]>;
  /** Nodes in id order. An after/before UID need not exist (ids order themselves). */
  pageNodes(page: PageRequest): Promise<Page<NodeRecord>>;
  /** Create or update a node record. */
  putNode(node: NodeRecord): Promise<void>;
  /** Delete a node with all of its items, affiliations and subscriptions. */
  deleteNode(id: string): Promise<void>;

  getAffiliations(node: string): Promise<Map<string, Affiliation>>;
  /** Affiliations of one bare JID over all nodes. */
  getAffiliationsOf(jid: string): Promise<Array<{ node: string; affiliation: Affiliation }>>;
  /** `none` removes the stored affiliation. */
  setAffiliation(node: string, jid: string, affiliation: Affiliation): Promise<void>;

  getSubscriptions(node: string): Promise<Subscription[]>;
  /** Subscriptions whose JID has this bare JID (any resource), over all nodes. */
  getSubscriptionsOf(bareJid: string): Promise<Subscription[]>;
  putSubscription(sub: Subscription): Promise<void>;
  deleteSubscription(node: string, jid: string, subid: string): Promise<void>;

  /**
   * A publication as one write (one batch on the key-value backends: all of it or, if the write
   * fails, none of it): stores the item (replacing one with the same id, which then counts as
   * newest), drops the oldest items beyond `options.keep` and, with `options.archive`, appends
   * `{stamp: item.published, item}` to the node's archive, dropping its oldest entries beyond
   * `options.archive.keep`. Resolves to the item ids dropped and the new archive entry's id.
   * Rejects with the backend's error when the write fails.
   */
  publishItem(node: string, item: Item, options: { keep: number; archive?: { keep: number } }): Promise<{ dropped: string[]; archiveId?: string }>;
  /**
   * Several publications to one node as ONE write (one batch on the key-value backends), leaving
   * the node and its archive as the same publishItem calls in this order would: each item
   * stored (an id given twice, or already in the node, ends up once, as newest of those
   * published before it), the oldest beyond `options.keep` dropped, and one archive entry per
   * item, in order. Resolves to the ids dropped and the archive entries' ids (one per item, in
   * order; none without `options.archive`). Rejects with the backend's error when the write
   * fails (then nothing of it is written).
   */
  publishMany(node: string, items: Item[], options: { keep: number; archive?: { keep: number } }): Promise<{ dropped: string[]; archiveIds: string[] }>;
  /**
   * Removes these items (ids not in the node are skipped) as one write, as publishItem; with
   * `options.archive` and at least one item removed, appends a tombstone `{stamp, retracted}`
   * to the archive in the same write. Resolves to the ids removed, in publication order.
   */
  retractItems(node: string, ids: string[], options?: { archive?: { stamp: number; keep: number } }): Promise<{ retracted: string[]; archiveId?: string }>;
  /**
   * Store an item (replacing one with the same id, which then counts as newest) and drop the
   * oldest items beyond `keep`. Returns the ids dropped. (publishItem without an archive entry.)
   */
  putItem(node: string, item: Item, keep: number): Promise<string[]>;
  getItems(node: string, query?: ItemQuery): Promise<Item[]>;
  countItems(node: string): Promise<number>;
  /**
   * Item ids in publication order (oldest first), one page of them. Undefined when after/before
   * names an item that is not (or no longer) in the node: its position is unknown.
   */
  pageItemIds(node: string, page: PageRequest): Promise<Page<string> | undefined>;
  /** Returns true if an item was deleted. */
  deleteItem(node: string, id: string): Promise<boolean>;
  /** Drop the oldest items beyond `keep`; returns the ids dropped. */
  trimItems(node: string, keep: number): Promise<string[]>;
  /** Removes every item; with `options.archive`, appends a `{stamp, purged: true}` entry in the same write. */
  purgeItems(node: string, options?: { archive?: { stamp: number; keep: number } }): Promise<{ archiveId?: string }>;

  /**
   * Appends to the node's archive (its history: publications and tombstones) and drops the
   * oldest entries beyond `keep`. Returns the new entry's id: unique, never reused, and ordered
   * as the archive is (by stamp, then by arrival).
   */
  appendArchive(node: string, entry: Omit<ArchiveEntry, 'id'>, keep: number): Promise<string>;
  /**
   * One page of the archive entries the query selects, oldest first. Undefined when an id the
   * query or page names (namedArchiveIds) is not in the archive.
   */
  pageArchive(node: string, query: ArchiveQuery, page: PageRequest): Promise<Page<ArchiveEntry> | undefined>;

  /**
   * What start-up needs to re-arm its timers, from a durable index kept with every write (so it
   * never reads every node): the nodes whose configuration has item expiry (seconds), and per
   * node the earliest end of a leased subscription (ms since epoch).
   */
  timerIndex(): Promise<TimerIndex>;

  /**
   * Shared stores (several Hermod processes on one CouchDB database): calls `listener` with
   * what other processes changed, from the store's changes feed, so that caches drop it.
   * Returns the function that stops listening. Single-process stores never call it.
   */
  watch?(listener: (change: StoreChange) => void): () => void;
  /**
   * Runs `work` as the only change to the node among all processes sharing the store (its
   * cluster-wide lock; nested calls for the same node run at once). `work(stale)`: stale is
   * true when another process may have changed the node's record, affiliations or
   * subscriptions since this one last held it, so cached state of the node must be reread
   * (items and archive have no cache outside the store). Single-process stores run
   * `work(false)` at once.
   */
  exclusive?<T>(node: string, work: (stale: boolean) => Promise<T>): Promise<T>;
}

/**
 * What another process changed in a shared store (Store.watch): a node's record, affiliations
 * or subscriptions (items and archive have no cache outside the store), or a state space's key.
 */
export type StoreChange = { kind: 'node'; node: string } | { kind: 'state'; namespace: string; key: string };

/** See Store.timerIndex. */
export interface TimerIndex {
  /** Node id -> its pubsub#item_expire in seconds (nodes without item expiry are absent). */
  itemExpiry: Map<string, number>;
  /** Node id -> the earliest pubsub#expire of its leased subscriptions, ms since epoch. */
  leaseEnds: Map<string, number>;
}

/** A node's item expiry in seconds, or undefined when it has none (records written before the field existed have none). */
export function itemExpiryOf(node: NodeRecord): number | undefined {
  const expire = node.config.itemExpire as number | 'max' | undefined;
  return typeof expire === 'number' ? expire : undefined;
}

/** Adds a lease end (ms since epoch; undefined: not leased) to a per-node index, keeping the earliest. */
export function addLeaseEnd(ends: Map<string, number>, node: string, end: number | undefined): void {
  if (end === undefined) return;
  const current = ends.get(node);
  if (current === undefined || end < current) ends.set(node, end);
}

/** An archive id: the stamp, then a per-node counter, both fixed-width hex (orders as text). */
export function archiveId(stamp: number, seq: number): string {
  return `${Math.max(0, Math.floor(stamp)).toString(16).padStart(12, '0')}-${seq.toString(16).padStart(10, '0')}`;
}

/** Bounds of an archive query as archive ids (exclusive): [above, below]. */
export function archiveBounds(query: ArchiveQuery): { above: string; below: string } {
  let above = '';
  let below = '\uffff';
  if (query.start !== undefined) above = archiveId(query.start, 0).slice(0, 12); // every id of that ms or later sorts above
  if (query.afterId !== undefined && query.afterId > above) above = query.afterId;
  if (query.end !== undefined) below = `${archiveId(query.end, 0).slice(0, 12)}.`; // '.' sorts after '-': all ids of that ms
  if (query.beforeId !== undefined && query.beforeId < below) below = query.beforeId;
  return { above, below };
}

/** Throws unless `namespace` can name a state space (non-empty, no '\0'). */
export function checkNamespace(namespace: string): void {
  if (namespace === '' || namespace.includes('\0')) throw new Error(`state space name ${JSON.stringify(namespace)}: must be non-empty and without \\0`);
}

/**
 * The least string above every string that starts with `prefix` (non-empty), in UTF-8 byte
 * order (= code point order): the prefix with its last code point incremented. (A prefix ending
 * in U+10FFFF has no such string; its end is then the prefix itself plus U+10FFFF.)
 */
export function prefixEnd(prefix: string): string {
  const chars = [...prefix];
  const last = (chars.pop() as string).codePointAt(0) as number;
  if (last === 0x10ffff) return prefix + '\u{10ffff}';
  // Surrogate code points are not text: after U+D7FF comes U+E000.
  return chars.join('') + String.fromCodePoint(last === 0xd7ff ? 0xe000 : last + 1);
}

/** The bare JID of a JID string (one function for all of Hermod: src/util/bare-jid.ts). */
export { bareJid } from '../util/bare-jid.ts';

/**
 * The page of an in-memory ordered list (the reference semantics every backend must match).
 * `position(uid)` gives where an after/before UID sits: its index, or, for UIDs that order
 * themselves, a fractional position between neighbours; undefined when unknown.
 */
export function pageOf<T>(all: readonly T[], page: PageRequest, position: (uid: string) => number | undefined): Page<T> | undefined {
  const count = all.length;
  const max = Math.max(0, page.max);
  let start: number;
  if (page.after !== undefined) {
    const at = position(page.after);
    if (at === undefined) return undefined;
    start = Math.floor(at) + 1;
  } else if (page.before !== undefined) {
    let end = count;
    if (page.before !== '') {
      const at = position(page.before);
      if (at === undefined) return undefined;
      end = Math.ceil(at);
    }
    start = Math.max(0, end - max);
    return { entries: all.slice(start, end).slice(0, max), count, firstIndex: start };
  } else {
    start = Math.max(0, page.index ?? 0);
  }
  return { entries: all.slice(start, start + max), count, firstIndex: start };
}
