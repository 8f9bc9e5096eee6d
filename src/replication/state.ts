// Durable replication bookkeeping (LevelDB under dataDir/replication), separate from the pub/sub
// store: change-feed checkpoints, which nodes each document was published to, and every
// revision that was imported from a partner or published by us — the memory that stops echoes. Hot entries are cached in an LRU in front of the database.

import { ClassicLevel } from 'classic-level';
import { LRUCache } from 'lru-cache';
import type { HistoryPositions } from './partners.ts';

const SEP = '\0';

export class ReplicationState {
  private readonly db: ClassicLevel<string, string>;
  private readonly cache = new LRUCache<string, string>({ max: 50_000 });

  constructor(location: string) {
    this.db = new ClassicLevel<string, string>(location, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  }

  async open(): Promise<void> {
    await this.db.open();
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  private async get(key: string): Promise<string | undefined> {
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    const value = await this.db.get(key);
    if (value !== undefined) this.cache.set(key, value);
    return value;
  }

  private async put(key: string, value: string): Promise<void> {
    await this.db.put(key, value);
    this.cache.set(key, value);
  }

  /** The change-feed position after which everything has been published (opaque). */
  async checkpoint(feed: string): Promise<string | undefined> {
    const value = await this.get(`cp${SEP}${feed}`);
    return value === undefined ? undefined : (JSON.parse(value) as string);
  }

  async setCheckpoint(feed: string, seq: unknown): Promise<void> {
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
    for await (const [k, v] of this.db.iterator({ gt: `${kind}${SEP}`, lt: `${kind}${SEP}\uffff` })) out.push([k.slice(kind.length + 1), JSON.parse(v) as T]);
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
    await this.db.batch(revs.map((rev) => ({ type: 'put' as const, key: `rev${SEP}${docId}${SEP}${rev}`, value: kind })));
    for (const rev of revs) this.cache.set(`rev${SEP}${docId}${SEP}${rev}`, kind);
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
    for await (const key of this.db.keys({ gt: prefix, lt: `${prefix}\uffff` })) out.push(key.slice(prefix.length));
    return out;
  }
}
