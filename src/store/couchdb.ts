// The Store on CouchDB (through nano), for deployments that outgrow one machine: the key-value
// Store (kv-store.ts) over one CouchDB database, one document per key. Document ids are the keys'
// UTF-8 bytes in lowercase hex, so `_all_docs` orders them exactly as LevelDB orders its keys
// (raw and ICU collation agree on [0-9a-f]) and range reads are `_all_docs` start/end key pages.
// Writes of one change go in one `_bulk_docs` request: CouchDB applies it whole unless the
// CouchDB node itself dies mid-request (it has no multi-document transactions). An acknowledged
// write is on CouchDB's disk. Revisions are cached; a conflict in a plain batch is retried with
// the current revision (last write wins), which is right where the writer read what it writes
// under the node's lock (node-lock.ts: several Hermods may share the database). Conditional
// writes (SharedKv.putIf) fail on a conflict instead, and the `_changes` feed (change-feed.ts)
// tells which keys other processes changed; this process's own revisions are recognised there.
// The server URL may carry credentials: they never appear in errors or logs (redactUrl).

import http from 'node:http';
import https from 'node:https';
import { LRUCache } from 'lru-cache';
import type { DocumentScope } from 'nano';
import { ChangeFeed, type FeedRow } from './change-feed.ts';
import { COUCH_REQUEST_TIMEOUT_MS, couchUnreachable, databaseMissing, describeCouchFailure } from './couch-answers.ts';
import { KvStore, type KvStoreOptions } from './kv-store.ts';
import type { BatchOp, KvRange, OrderedKv, SharedKv } from './kv.ts';
import { jsonBody } from '../util/json-body.ts';

export interface CouchStoreOptions {
  /** CouchDB server URL, e.g. http://user:pass@127.0.0.1:5984 */
  url: string;
  /** Database name; created on open if missing. */
  db: string;
}

interface KvDoc {
  _id: string;
  _rev?: string;
  _deleted?: boolean;
  v?: string;
}

const PAGE = 1000;
const CONFLICT_RETRIES = 5;
/** Tries of a request answered "no database" (couch-answers.ts) before it fails, the first wait and the longest (ms). */
const MISSING_DB_ATTEMPTS = 8;
const MISSING_DB_FIRST_WAIT_MS = 50;
const MISSING_DB_MAX_WAIT_MS = 2_000;
/**
 * Idle keep-alive connections are closed after this long (ms), before the server closes them:
 * pouchdb-server (Node's http server) closes an idle one after 5 s, and a request sent on a
 * connection the server is closing at that moment fails with ECONNRESET (nano's own agent keeps
 * idle connections forever). Hermod's requests to the store come in bursts with quiet gaps, so
 * that race turned into refused publishes (wait/internal-server-error) now and then.
 */
const IDLE_SOCKET_MS = 4_000;
const hex = (key: string): string => Buffer.from(key, 'utf8').toString('hex');
const unhex = (id: string): string => Buffer.from(id, 'hex').toString('utf8');
/** Is this a document id of a key (ids of other documents, e.g. design documents, are not)? */
const isKeyId = (id: string): boolean => id.length % 2 === 0 && /^[0-9a-f]*$/.test(id);

/** The URL without user:password (for messages and logs). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '***';
      u.password = '';
    }
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid URL)';
  }
}

export class CouchStoreError extends Error {
  constructor(
    message: string,
    /** CouchDB did not answer (a network error or HTTP 5xx), rather than refusing. */
    readonly unreachable = false,
  ) {
    super(message);
    this.name = 'CouchStoreError';
  }
}

/** CouchDB as an OrderedKv (nano is imported at open(): a start on LevelDB does not load it). */
export class CouchKv implements OrderedKv {
  private db!: DocumentScope<KvDoc>;
  private readonly where: string;
  /** Known revisions by document id; '' = known not to exist. */
  private readonly revs = new LRUCache<string, string>({ max: 100_000 });
  /** Revision and value of what swap() last wrote, by document id (leases, heartbeats: a few). */
  private readonly swapped = new LRUCache<string, { rev: string; v: string }>({ max: 1_000 });
  /** "id rev" of the revisions this process wrote lately: the feed leaves them out. */
  private readonly written = new LRUCache<string, true>({ max: 100_000 });
  private feed: ChangeFeed | undefined;
  private readonly listeners = new Set<(keys: string[]) => void>();
  readonly shared: SharedKv = {
    versioned: (key) => this.versioned(key),
    putIf: (key, value, version) => this.putIf(key, value, version),
    watch: (listener) => this.watch(listener),
  };

  constructor(private readonly options: CouchStoreOptions) {
    this.where = `CouchDB ${redactUrl(options.url)}/${options.db}`;
  }

  /**
   * Runs a request, turning its failure into an error that names the database but no secret. A
   * request answered "no database" (pouchdb-server's transient `no_db_file`: couch-answers.ts) is
   * tried again, waiting 50 ms doubling up to 2 s, MISSING_DB_ATTEMPTS times in all (≈ 7 s).
   */
  private async call<T>(what: string, request: () => Promise<T>): Promise<T> {
    for (let attempt = 1, wait = MISSING_DB_FIRST_WAIT_MS; ; attempt++, wait = Math.min(MISSING_DB_MAX_WAIT_MS, wait * 2)) {
      try {
        return await request();
      } catch (err) {
        if (!databaseMissing(err) || attempt >= MISSING_DB_ATTEMPTS) throw this.error(what, err);
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  private error(what: string, err: unknown): CouchStoreError {
    let text = `${this.where}: ${what} failed: ${describeCouchFailure(err, { key: 'store.couchdb.url', dbKey: 'store.couchdb.db' })}`;
    const password = urlPassword(this.options.url);
    if (password) text = text.split(password).join('***');
    return new CouchStoreError(text, couchUnreachable(err));
  }

  async open(): Promise<void> {
    const { default: nano } = await import('nano');
    const agentOptions = { keepAlive: true, maxSockets: 50, timeout: IDLE_SOCKET_MS };
    const agent = this.options.url.startsWith('https:') ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    const server = nano({ url: this.options.url, requestDefaults: { agent, timeout: COUCH_REQUEST_TIMEOUT_MS } });
    this.db = server.use<KvDoc>(this.options.db);
    await this.call('opening the database', async () => {
      try {
        await server.db.get(this.options.db);
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) throw err;
        try {
          await server.db.create(this.options.db);
        } catch (created) {
          if ((created as { statusCode?: number }).statusCode !== 412) throw created; // created meanwhile
        }
      }
    });
  }

  async close(): Promise<void> {
    await this.feed?.stop();
    this.feed = undefined;
    this.listeners.clear();
    this.revs.clear();
  }

  /** A revision this process wrote (the feed leaves it out). */
  private wrote(id: string, rev: string): void {
    this.written.set(`${id} ${rev}`, true);
  }

  /** The key's document (undefined when absent); its revision is remembered. */
  private async doc(key: string): Promise<KvDoc | undefined> {
    const id = hex(key);
    const doc = await this.call('reading', async () => {
      try {
        return await this.db.get(id);
      } catch (err) {
        // 404 "missing"/"deleted": no such document; 404 "no database" is not an answer about it.
        if ((err as { statusCode?: number }).statusCode === 404 && !databaseMissing(err)) return undefined;
        throw err;
      }
    });
    this.revs.set(id, doc?._rev ?? '');
    return doc;
  }

  private async versioned(key: string): Promise<{ value?: string; version: string }> {
    const doc = await this.doc(key);
    return doc?._rev ? { value: doc.v as string, version: doc._rev } : { version: '' };
  }

  private async putIf(key: string, value: string | undefined, version: string): Promise<string | undefined> {
    const id = hex(key);
    if (value === undefined && version === '') return '';
    const doc: KvDoc = value === undefined ? { _id: id, _rev: version, _deleted: true } : { _id: id, ...(version ? { _rev: version } : {}), v: value };
    const [result] = await this.call('writing', () => this.db.bulk({ docs: [doc] }));
    if (result?.error === 'conflict') {
      this.revs.delete(id);
      return undefined;
    }
    if (!result || result.error || !result.rev) throw new CouchStoreError(`${this.where}: writing failed: ${result?.error ?? 'no answer'}${result?.reason ? ` (${result.reason})` : ''}`);
    this.wrote(id, result.rev);
    this.revs.set(id, value === undefined ? '' : result.rev);
    return value === undefined ? '' : result.rev;
  }

  /** Starts the feed with the first listener (resolves once it follows). */
  private async watch(listener: (keys: string[]) => void): Promise<() => void> {
    this.listeners.add(listener);
    if (!this.feed) {
      this.feed = new ChangeFeed({
        url: this.options.url,
        db: this.options.db,
        onRows: (rows) => this.changed(rows),
        onError: (err) => process.emitWarning(this.error('following the changes feed', err).message),
      });
      try {
        await this.feed.start();
      } catch (err) {
        // Not following: the next open starts the feed afresh (a CouchDB that is not up yet is waited for).
        this.feed = undefined;
        this.listeners.delete(listener);
        throw err instanceof CouchStoreError ? err : this.error('following the changes feed', err);
      }
    }
    return () => void this.listeners.delete(listener);
  }

  /** Rows of the feed: other processes' revisions drop the cached revision and reach the listeners. */
  private changed(rows: FeedRow[]): void {
    const keys: string[] = [];
    for (const row of rows) {
      if (!isKeyId(row.id) || this.written.has(`${row.id} ${row.rev}`)) continue;
      this.revs.delete(row.id);
      keys.push(unhex(row.id));
    }
    if (keys.length > 0) for (const listener of this.listeners) listener(keys);
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.doc(key))?.v;
  }

  async getMany(keys: string[]): Promise<Array<string | undefined>> {
    if (keys.length === 0) return [];
    const ids = keys.map(hex);
    const response = await this.call('reading', () => this.db.fetch({ keys: ids }));
    return response.rows.map((row, i) => {
      const doc = 'doc' in row ? (row.doc as KvDoc | null) : undefined;
      const value = 'value' in row ? (row.value as { rev?: string; deleted?: boolean } | undefined) : undefined;
      // The revision comes with the answer: a write of the key after this read needs no other.
      const id = ids[i] as string;
      if (value?.rev) this.revs.set(id, value.deleted ? '' : value.rev);
      else if ('error' in row && row.error === 'not_found') this.revs.set(id, '');
      return doc && !doc._deleted ? doc.v : undefined;
    });
  }

  async batch(ops: BatchOp[]): Promise<void> {
    // The last op on a key wins, as in a LevelDB batch.
    let pending = new Map<string, BatchOp>();
    for (const op of ops) pending.set(hex(op.key), op);
    for (let attempt = 0; pending.size > 0; attempt++) {
      if (attempt > CONFLICT_RETRIES) throw new CouchStoreError(`${this.where}: writing failed: conflicts persisted after ${CONFLICT_RETRIES} retries`);
      // Revisions not known are read first only for deletions (they need one) and for retries
      // after a conflict: a put of a key not seen before is sent without one (new keys, the
      // common case, cost no read; one that exists after all comes back as a conflict).
      const unknown = [...pending].filter(([id, op]) => !this.revs.has(id) && (attempt > 0 || op.type === 'del')).map(([id]) => id);
      if (unknown.length > 0) {
        const found = await this.call('reading revisions', () => this.db.fetchRevs({ keys: unknown }));
        for (const row of found.rows) {
          const value = 'value' in row ? (row.value as { rev: string; deleted?: boolean }) : undefined;
          this.revs.set('id' in row ? row.id : (row as { key: string }).key, value && !value.deleted ? value.rev : '');
        }
      }
      const docs: KvDoc[] = [];
      for (const [id, op] of pending) {
        const rev = this.revs.get(id) || undefined;
        if (op.type === 'put') docs.push({ _id: id, ...(rev ? { _rev: rev } : {}), v: op.value });
        else if (rev) docs.push({ _id: id, _rev: rev, _deleted: true });
      }
      if (docs.length === 0) return;
      const results = await this.call('writing', () => this.db.bulk(jsonBody({ docs }) as never));
      const retry = new Map<string, BatchOp>();
      for (const result of results) {
        const id = result.id as string;
        const op = pending.get(id);
        if (!op) continue;
        if (!result.error && result.rev) {
          this.wrote(id, result.rev);
          this.revs.set(id, op.type === 'put' ? result.rev : '');
        } else if (result.error === 'conflict') {
          this.revs.delete(id);
          retry.set(id, op);
        } else {
          throw new CouchStoreError(`${this.where}: writing failed: ${result.error}${result.reason ? ` (${result.reason})` : ''}`);
        }
      }
      pending = retry;
    }
  }

  /**
   * Compare-and-set on the document's revision: reads the document (not the cached revision),
   * compares its value, writes with its `_rev`; a 409 (another writer won) resolves to false.
   */
  async swap(key: string, expected: string | undefined, next: string | undefined): Promise<boolean> {
    const id = hex(key);
    // What this map last swapped in: its revision still current means its value is (one PUT).
    const last = this.swapped.get(id);
    if (last && expected !== undefined && last.v === expected) return this.swapWrite(id, last.rev, next);
    const doc = await this.doc(key);
    if (doc?.v !== expected) return false;
    if (next === undefined && !doc) return true;
    return this.swapWrite(id, doc?._rev, next);
  }

  /** Writes `next` (undefined: deletes) over revision `rev`; false on a 409 (another writer won). */
  private async swapWrite(id: string, rev: string | undefined, next: string | undefined): Promise<boolean> {
    this.swapped.delete(id);
    const doc: KvDoc = next === undefined ? { _id: id, _rev: rev as string, _deleted: true } : { _id: id, ...(rev ? { _rev: rev } : {}), v: next };
    const written = await this.call('writing', async () => {
      try {
        return await this.db.insert(doc);
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 409) return undefined;
        throw err;
      }
    });
    if (written === undefined) {
      this.revs.delete(id);
      return false;
    }
    this.wrote(id, written.rev);
    this.revs.set(id, next === undefined ? '' : written.rev);
    if (next !== undefined) this.swapped.set(id, { rev: written.rev, v: next });
    return true;
  }

  /** `_all_docs` rows in the range, page by page. */
  private async *rows(range: KvRange, includeDocs: boolean): AsyncGenerator<{ id: string; doc?: KvDoc }> {
    const reverse = range.reverse ?? false;
    let remaining = range.limit === undefined || range.limit < 0 ? Infinity : range.limit;
    const upper = range.lt !== undefined ? { id: hex(range.lt), inclusive: false } : range.lte !== undefined ? { id: hex(range.lte), inclusive: true } : undefined;
    const lower = range.gt !== undefined ? { id: hex(range.gt), inclusive: false } : range.gte !== undefined ? { id: hex(range.gte), inclusive: true } : undefined;
    // The first bound in reading order is always inclusive in CouchDB: rows equal to `skip` are dropped.
    let start = reverse ? upper?.id : lower?.id;
    let skip = reverse ? (upper && !upper.inclusive ? upper.id : undefined) : lower && !lower.inclusive ? lower.id : undefined;
    const end = reverse ? lower : upper;
    while (remaining > 0) {
      const limit = Math.min(PAGE, remaining) + (skip !== undefined ? 1 : 0);
      const params = {
        include_docs: includeDocs,
        descending: reverse,
        limit,
        ...(start !== undefined ? { startkey: start } : {}),
        ...(end ? { endkey: end.id, inclusive_end: end.inclusive } : {}),
      };
      const page = await this.call('reading a range', () => this.db.list(params));
      let last: string | undefined;
      for (const row of page.rows) {
        last = row.id;
        if (row.id === skip) continue;
        if (remaining <= 0) break;
        remaining -= 1;
        yield { id: row.id, ...(row.doc ? { doc: row.doc as KvDoc } : {}) };
      }
      if (page.rows.length < limit || last === undefined) return;
      start = last;
      skip = last;
    }
  }

  async *entries(range: KvRange): AsyncIterable<[string, string]> {
    for await (const row of this.rows(range, true)) yield [unhex(row.id), row.doc?.v ?? ''];
  }

  async *keys(range: KvRange): AsyncIterable<string> {
    for await (const row of this.rows(range, false)) yield unhex(row.id);
  }
}

function urlPassword(url: string): string {
  try {
    return decodeURIComponent(new URL(url).password);
  } catch {
    return '';
  }
}

export class CouchStore extends KvStore {
  constructor(options: CouchStoreOptions & KvStoreOptions) {
    super(new CouchKv(options), options);
  }
}
