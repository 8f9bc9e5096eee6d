// Durable replication bookkeeping, in a state space of the store (Store.state: 'replication' for
// Ajatus, 'midgard' for Midgard), so it lives wherever the store lives (LevelDB or CouchDB) and
// `hermod migrate` moves it: change-feed checkpoints, which nodes each document was published
// to, and every revision that was imported from a partner or published by us — the memory that
// stops echoes. Hot entries are cached in an LRU in front of the store (this is the space's only
// writer). Older Hermods kept this in a LevelDB of its own (dataDir/replication, dataDir/midgard):
// open() imports such a directory once and renames it to <dir>.imported.

import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { ClassicLevel } from 'classic-level';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../log.ts';
import type { Checkpoint, CheckpointStore } from '../sources/source.ts';
import type { StateOp, StateSpace } from '../store/store.ts';
import type { HistoryPositions } from './follow-delivery.ts';

const SEP = '\0';
const IMPORT_BATCH = 1000;

export interface ReplicationStateOptions {
  /** A LevelDB directory an older Hermod kept this state in: imported once at open(). */
  legacyDir?: string;
  /** Hears of that import. */
  log?: Pick<Logger, 'info'>;
}

/**
 * Copies every entry of an older Hermod's replication LevelDB (`dir`) into `space`, then renames
 * the directory to `<dir>.imported` (a later start finds nothing to import; nothing is deleted).
 * Resolves to the number of entries copied, or undefined when there is no such directory.
 * Rerunnable: a start that dies mid-import copies the same entries again. Throws the LevelDB
 * error when the directory cannot be read (e.g. another process holds it).
 */
export async function importLegacyState(space: StateSpace, dir: string, log?: Pick<Logger, 'info'>): Promise<number | undefined> {
  if (!existsSync(dir)) return undefined;
  const db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8', createIfMissing: false });
  await db.open();
  let copied = 0;
  try {
    let ops: StateOp[] = [];
    for await (const [key, value] of db.iterator()) {
      ops.push({ type: 'put', key, value });
      if (ops.length >= IMPORT_BATCH) {
        await space.batch(ops);
        copied += ops.length;
        ops = [];
      }
    }
    await space.batch(ops);
    copied += ops.length;
  } finally {
    await db.close();
  }
  let movedTo = `${dir}.imported`;
  if (existsSync(movedTo)) movedTo = `${dir}.imported-${Date.now()}`;
  await rename(dir, movedTo);
  log?.info('replication state of an older Hermod imported into the store (once)', { from: dir, entries: copied, movedTo });
  return copied;
}

export class ReplicationState implements CheckpointStore {
  private readonly cache = new LRUCache<string, string>({ max: 10_000 });
  private readonly unwatch: (() => void) | undefined;

  constructor(
    private readonly space: StateSpace,
    private readonly options: ReplicationStateOptions = {},
  ) {
    // Several Hermods on one store: what another one wrote is read again.
    this.unwatch = space.watch?.((key) => this.cache.delete(key));
  }

  /** Imports the legacy directory, if any (see importLegacyState). The store must be open. */
  async open(): Promise<void> {
    if (this.options.legacyDir !== undefined) await importLegacyState(this.space, this.options.legacyDir, this.options.log);
  }

  /** Forgets the cache; the store itself is closed by its owner. */
  async close(): Promise<void> {
    this.unwatch?.();
    this.cache.clear();
  }

  private async get(key: string): Promise<string | undefined> {
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    const value = await this.space.get(key);
    if (value !== undefined) this.cache.set(key, value);
    return value;
  }

  private async put(key: string, value: string): Promise<void> {
    await this.space.batch([{ type: 'put', key, value }]);
    this.cache.set(key, value);
  }

  /** The change-feed position after which everything has been published (opaque). */
  async checkpoint(feed: string): Promise<Checkpoint | undefined> {
    const value = await this.get(`cp${SEP}${feed}`);
    return value === undefined ? undefined : (JSON.parse(value) as Checkpoint);
  }

  async setCheckpoint(feed: string, seq: Checkpoint): Promise<void> {
    await this.put(`cp${SEP}${feed}`, JSON.stringify(seq));
  }

  /** Nodes a document's current version is published to. */
  async nodesOf(docId: string): Promise<string[]> {
    const value = await this.get(`nodes${SEP}${docId}`);
    return value === undefined ? [] : (JSON.parse(value) as string[]);
  }

  async setNodesOf(docId: string, nodes: string[]): Promise<void> {
    await this.put(`nodes${SEP}${docId}`, JSON.stringify(nodes));
  }

  /** Nodes a document was last deleted from: its later revisions (still deleted) go there too. */
  async deletedFrom(docId: string): Promise<string[]> {
    const value = await this.get(`gone${SEP}${docId}`);
    return value === undefined ? [] : (JSON.parse(value) as string[]);
  }

  async setDeletedFrom(docId: string, nodes: string[]): Promise<void> {
    await this.put(`gone${SEP}${docId}`, JSON.stringify(nodes));
  }

  /** A JSON record under `kind`/`id` (Midgard: versions, documents, topics, persons). */
  async record<T>(kind: string, id: string): Promise<T | undefined> {
    const value = await this.get(`${kind}${SEP}${id}`);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  async setRecord(kind: string, id: string, value: unknown): Promise<void> {
    await this.put(`${kind}${SEP}${id}`, JSON.stringify(value));
  }

  /** Every record of a kind, in key order. */
  async records<T>(kind: string): Promise<Array<[string, T]>> {
    const out: Array<[string, T]> = [];
    for await (const [k, v] of this.space.range(`${kind}${SEP}`)) out.push([k.slice(kind.length + 1), JSON.parse(v) as T]);
    return out;
  }

  /** Revisions of a document this site has already handled: 'i' imported, 'p' published. */
  async revKind(docId: string, rev: string): Promise<'i' | 'p' | undefined> {
    return (await this.get(`rev${SEP}${docId}${SEP}${rev}`)) as 'i' | 'p' | undefined;
  }

  /** The revisions in `revs` this site has neither imported nor published. */
  async unknownRevs(docId: string, revs: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const rev of revs) if ((await this.revKind(docId, rev)) === undefined) out.push(rev);
    return out;
  }

  /** Remember revisions (imported: before writing them locally; published: after publishing). */
  async markRevs(docId: string, revs: string[], kind: 'i' | 'p'): Promise<void> {
    await this.space.batch(revs.map((rev) => ({ type: 'put' as const, key: `rev${SEP}${docId}${SEP}${rev}`, value: kind })));
    for (const rev of revs) this.cache.set(`rev${SEP}${docId}${SEP}${rev}`, kind);
  }

  /**
   * markRevs for many documents in one store batch (a sink's flush: every revision it is about
   * to write, recorded before the write). `docs` maps document id -> revisions.
   */
  async markRevsOfMany(docs: Iterable<readonly [string, readonly string[]]>, kind: 'i' | 'p'): Promise<void> {
    const ops: StateOp[] = []; // loops, not map(): see src/util/hot-loops.md
    for (const [docId, revs] of docs) for (const rev of revs) ops.push({ type: 'put', key: `rev${SEP}${docId}${SEP}${rev}`, value: kind });
    if (ops.length === 0) return;
    await this.space.batch(ops);
    for (const op of ops) this.cache.set(op.key, kind);
  }

  /** Where an attachment (by CouchDB digest) was uploaded, so unchanged ones are not sent again. */
  async upload(digest: string): Promise<{ url: string; sha256: string } | undefined> {
    const value = await this.get(`up${SEP}${digest}`);
    return value === undefined ? undefined : (JSON.parse(value) as { url: string; sha256: string });
  }

  async setUpload(digest: string, record: { url: string; sha256: string }): Promise<void> {
    await this.put(`up${SEP}${digest}`, JSON.stringify(record));
  }

  /** Position in a partner node's history (XEP-0313 archive id) up to which we have caught up. */
  async historyPosition(service: string, node: string): Promise<string | undefined> {
    return this.get(`hist${SEP}${service}${SEP}${node}`);
  }

  async setHistoryPosition(service: string, node: string, id: string): Promise<void> {
    await this.put(`hist${SEP}${service}${SEP}${node}`, id);
  }

  /** The history positions above, for a PartnerManager. */
  historyPositions(): HistoryPositions {
    return { get: (service, node) => this.historyPosition(service, node), set: (service, node, id) => this.setHistoryPosition(service, node, id), nodes: (service) => this.historyNodes(service) };
  }

  /** Every [service, node] with a history position: those followed now or in an earlier run. */
  async historyServiceNodes(): Promise<Array<readonly [string, string]>> {
    const prefix = `hist${SEP}`;
    const out: Array<readonly [string, string]> = [];
    for await (const [key] of this.space.range(prefix)) {
      const rest = key.slice(prefix.length);
      const at = rest.indexOf(SEP);
      if (at > 0) out.push([rest.slice(0, at), rest.slice(at + 1)]);
    }
    return out;
  }

  /** Which partner (contact JID) each service belonged to at its last discovery: service -> partner. */
  async serviceOwners(): Promise<Map<string, string>> {
    return new Map(await this.records<string>('owner'));
  }

  /** Records (or, with undefined, forgets) the partner a service belongs to (PartnerManagerOptions.owners). */
  async setServiceOwner(service: string, partner: string | undefined): Promise<void> {
    const key = `owner${SEP}${service}`;
    if (partner !== undefined) return this.put(key, JSON.stringify(partner));
    await this.space.batch([{ type: 'del', key }]);
    this.cache.delete(key);
  }

  /** Nodes of a service with a history position: those followed now or in an earlier run. */
  async historyNodes(service: string): Promise<string[]> {
    const prefix = `hist${SEP}${service}${SEP}`;
    const out: string[] = [];
    for await (const [key] of this.space.range(prefix)) out.push(key.slice(prefix.length));
    return out;
  }

  // ---- batches (one store write per batch of changes; see StateBatch) -------------------

  /** A new, empty batch of writes, applied by commit(). */
  batch(): StateBatch {
    return new StateBatch();
  }

  /** Writes the batch in one store write, then caches it. Rejects with the store's error (nothing cached then). */
  async commit(batch: StateBatch): Promise<void> {
    if (batch.size === 0) return;
    const ops: StateOp[] = []; // loops, not map(): see src/util/hot-loops.md
    for (const [key, value] of batch.ops) ops.push(value === undefined ? { type: 'del', key } : { type: 'put', key, value });
    await this.space.batch(ops);
    for (const [key, value] of batch.ops) {
      if (value === undefined) this.cache.delete(key);
      else this.cache.set(key, value);
    }
  }

  /** Values of many keys: the cached ones from the cache, the others in one store read (then cached). */
  private async getMany(keys: string[]): Promise<Array<string | undefined>> {
    const out: Array<string | undefined> = new Array<string | undefined>(keys.length);
    const missing: number[] = [];
    const missingKeys: string[] = [];
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i] as string;
      out[i] = this.cache.get(k);
      if (out[i] === undefined) {
        missing.push(i);
        missingKeys.push(k);
      }
    }
    if (missing.length === 0) return out;
    const fetched = await this.space.getMany(missingKeys);
    for (let j = 0; j < missing.length; j++) {
      const value = fetched[j];
      out[missing[j] as number] = value;
      if (value !== undefined) this.cache.set(missingKeys[j] as string, value);
    }
    return out;
  }

  /** record() of many (kind, id) pairs, in order, as stored (JSON text, or undefined): cache first, the rest in one store read. */
  async recordTexts(pairs: Array<readonly [string, string]>): Promise<Array<string | undefined>> {
    return this.getMany(pairs.map(([kind, id]) => `${kind}${SEP}${id}`));
  }

  /** nodesOf for many documents, in order: cache first, the rest in one store read. */
  async nodesOfMany(docIds: string[]): Promise<string[][]> {
    const keys: string[] = [];
    for (const id of docIds) keys.push(`nodes${SEP}${id}`);
    const values = await this.getMany(keys);
    const out: string[][] = [];
    for (const v of values) out.push(v === undefined ? [] : (JSON.parse(v) as string[]));
    return out;
  }

  /** revKind of every revision of many documents, in order: cache first, the rest in one store read. */
  async revKindsMany(docs: Array<{ id: string; revs: string[] }>): Promise<RevKind[][]> {
    const keys: string[] = [];
    for (const d of docs) for (const rev of d.revs) keys.push(`rev${SEP}${d.id}${SEP}${rev}`);
    const values = await this.getMany(keys);
    let i = 0;
    const out: RevKind[][] = [];
    for (const d of docs) {
      const kinds: RevKind[] = [];
      for (let j = 0; j < d.revs.length; j++) kinds.push(values[i++] as RevKind);
      out.push(kinds);
    }
    return out;
  }

  /**
   * revKind of every revision of a document as far as memory knows, without reading the store:
   * undefined when one of them is not in the cache (it may be in the store, or unknown: a new
   * revision). For deciding at once, e.g. whether to read a document before the store answers.
   */
  cachedRevKinds(docId: string, revs: readonly string[]): Array<'i' | 'p'> | undefined {
    const kinds: Array<'i' | 'p'> = [];
    for (const rev of revs) {
      const kind = this.cache.get(`rev${SEP}${docId}${SEP}${rev}`);
      if (kind !== 'i' && kind !== 'p') return undefined;
      kinds.push(kind);
    }
    return kinds;
  }
}

/** The kind each revision of a document has in the state ('i' imported, 'p' published, undefined: unknown). */
export type RevKind = 'i' | 'p' | undefined;

/**
 * Writes collected for one batch of changes, applied by ReplicationState.commit as ONE store
 * write (one LevelDB batch, one CouchDB `_bulk_docs`) instead of one write per document. Nothing
 * is written (nor cached) before commit: a crash before it leaves the state as it was, so the
 * batch is handled again from its checkpoint. A later write of the same key wins.
 */
export class StateBatch {
  /** key -> value (undefined: deleted), in first-write order. */
  readonly ops = new Map<string, string | undefined>();

  get size(): number {
    return this.ops.size;
  }

  /** As ReplicationState.markRevs. */
  markRevs(docId: string, revs: string[], kind: 'i' | 'p'): void {
    for (const rev of revs) this.ops.set(`rev${SEP}${docId}${SEP}${rev}`, kind);
  }

  /** As ReplicationState.setNodesOf. */
  setNodesOf(docId: string, nodes: string[]): void {
    this.ops.set(`nodes${SEP}${docId}`, JSON.stringify(nodes));
  }

  /** As ReplicationState.setDeletedFrom. */
  setDeletedFrom(docId: string, nodes: string[]): void {
    this.ops.set(`gone${SEP}${docId}`, JSON.stringify(nodes));
  }

  /** As ReplicationState.setRecord. */
  setRecord(kind: string, id: string, value: unknown): void {
    this.ops.set(`${kind}${SEP}${id}`, JSON.stringify(value));
  }

  /** Deletes the record under `kind`/`id` (none there: nothing happens). */
  deleteRecord(kind: string, id: string): void {
    this.ops.set(`${kind}${SEP}${id}`, undefined);
  }

  /** Adds every write of `other` (after this batch's own). */
  merge(other: StateBatch): void {
    for (const [key, value] of other.ops) this.ops.set(key, value);
  }
}

/**
 * The records of a publisher that handles changes one by one (Midgard: an object, then its
 * parameter, each reading what the one before wrote), with the writes kept in memory — seen by
 * its own reads at once — and written to the store together by flush(): one store write for a
 * whole batch of changes instead of several per change. What is not flushed yet is lost by a
 * crash, as if the changes had not been handled (their publishes happen again when they come
 * again). Flush after each batch (the feed does).
 */
export class DeferredState {
  /** key -> value not yet in the store (kept until the write that carries it has finished). */
  private readonly pending = new Map<string, string>();
  /** key -> value read ahead by prefetch() (undefined: not in the store), until forget(). */
  private known = new Map<string, string | undefined>();

  constructor(private readonly state: ReplicationState) {}

  /** As ReplicationState.record, pending writes first, then what prefetch() read. */
  async record<T>(kind: string, id: string): Promise<T | undefined> {
    const key = `${kind}${SEP}${id}`;
    const value = this.pending.get(key) ?? this.known.get(key);
    if (value === undefined && !this.known.has(key)) return this.state.record<T>(kind, id);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  /**
   * Reads the records of many (kind, id) pairs in one store read, absent ones included, so that
   * record() answers them without a read each until forget(). For one batch: the caller makes
   * sure nothing but this DeferredState writes them meanwhile.
   */
  async prefetch(pairs: Array<readonly [string, string]>): Promise<void> {
    const values = await this.state.recordTexts(pairs);
    this.known = new Map(pairs.map(([kind, id], i) => [`${kind}${SEP}${id}`, values[i]]));
  }

  /** Drops what prefetch() read. */
  forget(): void {
    this.known = new Map();
  }

  /** As ReplicationState.setRecord, kept until flush(). */
  setRecord(kind: string, id: string, value: unknown): void {
    this.pending.set(`${kind}${SEP}${id}`, JSON.stringify(value));
  }

  /** As ReplicationState.records, pending writes included. */
  async records<T>(kind: string): Promise<Array<[string, T]>> {
    const out = new Map(await this.state.records<T>(kind));
    const prefix = `${kind}${SEP}`;
    for (const [key, value] of this.pending) if (key.startsWith(prefix)) out.set(key.slice(prefix.length), JSON.parse(value) as T);
    return [...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** As ReplicationState.nodesOf, pending writes first. */
  async nodesOf(docId: string): Promise<string[]> {
    return (await this.record<string[]>('nodes', docId)) ?? [];
  }

  /** As ReplicationState.setNodesOf, kept until flush(). */
  setNodesOf(docId: string, nodes: string[]): void {
    this.setRecord('nodes', docId, nodes);
  }

  /** Writes what is pending in one store write. Rejects with the store's error (kept pending: the next flush tries again). */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const written = new Map(this.pending);
    const batch = this.state.batch();
    for (const [key, value] of written) batch.ops.set(key, value);
    await this.state.commit(batch);
    for (const [key, value] of written) if (this.pending.get(key) === value) this.pending.delete(key);
  }
}
