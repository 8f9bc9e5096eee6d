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
import type { HistoryPositions } from './partners.ts';

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
  private readonly cache = new LRUCache<string, string>({ max: 50_000 });

  constructor(
    private readonly space: StateSpace,
    private readonly options: ReplicationStateOptions = {},
  ) {}

  /** Imports the legacy directory, if any (see importLegacyState). The store must be open. */
  async open(): Promise<void> {
    if (this.options.legacyDir !== undefined) await importLegacyState(this.space, this.options.legacyDir, this.options.log);
  }

  /** Forgets the cache; the store itself is closed by its owner. */
  async close(): Promise<void> {
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
    const keys = [...docs].flatMap(([docId, revs]) => revs.map((rev) => `rev${SEP}${docId}${SEP}${rev}`));
    if (keys.length === 0) return;
    await this.space.batch(keys.map((key) => ({ type: 'put' as const, key, value: kind })));
    for (const key of keys) this.cache.set(key, kind);
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
    return { get: (service, node) => this.historyPosition(service, node), set: (service, node, id) => this.setHistoryPosition(service, node, id) };
  }

  /** Nodes of a service with a history position: those followed now or in an earlier run. */
  async historyNodes(service: string): Promise<string[]> {
    const prefix = `hist${SEP}${service}${SEP}`;
    const out: string[] = [];
    for await (const [key] of this.space.range(prefix)) out.push(key.slice(prefix.length));
    return out;
  }
}
