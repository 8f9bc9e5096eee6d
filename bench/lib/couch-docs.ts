// CouchDB-API helpers of the replication benchmark: deterministic Ajatus notes, loading them
// with `_bulk_docs`, and watching a target database's `_changes` until given revisions are there
// (how every replication figure decides that a document was delivered: what a user of the
// target database would see).

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';

/**
 * A pouchdb-server as the benchmark's stand-in for CouchDB: on loopback, without express-pouchdb's
 * validation part, whose per-document scan of design documents on every HTTP write CouchDB does
 * not have (src/devenv/pouchdb-server-no-validation.cjs; docs/PERFORMANCE.md, session 24). Every
 * bench database is started this way, for every system measured; none has a validate_doc_update.
 * HERMOD_BENCH_COUCH_VALIDATION=1 keeps the part (an A/B of the stand-in itself).
 */
export function startBenchCouch(): Promise<CouchServer> {
  return startCouch('127.0.0.1', { validation: process.env.HERMOD_BENCH_COUCH_VALIDATION === '1' });
}

/** Deterministic pseudo-random numbers (mulberry32), so every run writes the same documents. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = 'the project plan meeting notes review draft budget quarter site partner replication document team schedule release test customer update agreed follow action item owner deadline'.split(' ');

export type Doc = Record<string, unknown> & { _id: string; _rev?: string };

/**
 * `n` Ajatus notes of ~1–2 KiB (title, text, metadata), ids `<prefix>-000000`…, all in tag
 * `bench`, every fourth also in `bench2` (published to two nodes); the same for the same seed.
 * A generator, so that 100 000 of them need not be in memory at once.
 */
export function* docStream(prefix: string, n: number, seed: number): Generator<Doc> {
  const r = rng(seed);
  for (let i = 0; i < n; i++) {
    const len = 700 + Math.floor(r() * 1000);
    let text = '';
    while (text.length < len) text += `${WORDS[Math.floor(r() * WORDS.length)]} `;
    const when = new Date(Date.UTC(2026, 10, 1) + Math.floor(r() * 20 * 86_400_000)).toISOString();
    yield {
      _id: `${prefix}-${String(i).padStart(6, '0')}`,
      value: {
        _type: 'note',
        title: { val: `Note ${i}: ${WORDS[i % WORDS.length]} ${WORDS[(i * 7) % WORDS.length]}` },
        content: { val: text.trim() },
        tags: { val: i % 4 === 0 ? ['bench', 'bench2'] : ['bench'] },
        metadata: { creator: { val: 'alice' }, created: { val: when }, revised: { val: when }, deleted: { val: false } },
      },
    };
  }
}

/** The documents of `docStream` as an array. */
export const makeDocs = (prefix: string, n: number, seed: number): Doc[] => [...docStream(prefix, n, seed)];

/** Size of the documents' JSON in bytes, and how many are in two tags. */
export function docStats(docs: Iterable<Doc>): { bytes: { min: number; mean: number; max: number }; twoTags: number } {
  let min = Infinity;
  let max = 0;
  let sum = 0;
  let n = 0;
  let twoTags = 0;
  for (const d of docs) {
    const b = Buffer.byteLength(JSON.stringify(d));
    min = Math.min(min, b);
    max = Math.max(max, b);
    sum += b;
    n++;
    if ((d.value as { tags: { val: string[] } }).tags.val.length === 2) twoTags++;
  }
  return { bytes: { min: n ? min : NaN, mean: n ? sum / n : NaN, max: n ? max : NaN }, twoTags };
}

/**
 * Writes documents with `_bulk_docs`, `chunk` per request; resolves to id -> new `_rev`. Throws
 * on an HTTP error or on any document the server refused.
 */
export async function bulkLoad(server: CouchServer, db: string, docs: Iterable<Doc>, chunk: number): Promise<Map<string, string>> {
  const revs = new Map<string, string>();
  const send = async (batch: Doc[]): Promise<void> => {
    const { status, json } = await server.request('POST', `${db}/_bulk_docs`, { docs: batch });
    const rows = json as unknown as Array<{ id: string; rev?: string; error?: string; reason?: string }>;
    if (status >= 300 || !Array.isArray(rows)) throw new Error(`_bulk_docs ${db}: HTTP ${status} ${JSON.stringify(json).slice(0, 300)}`);
    for (const row of rows) {
      if (!row.rev) throw new Error(`_bulk_docs ${db}: ${row.id} refused: ${row.error} ${row.reason ?? ''}`);
      revs.set(row.id, row.rev);
    }
  };
  let batch: Doc[] = [];
  for (const d of docs) {
    batch.push(d);
    if (batch.length >= chunk) {
      await send(batch);
      batch = [];
    }
  }
  if (batch.length) await send(batch);
  return revs;
}

/** Follows a database's _changes (longpoll) and tells when documents have reached given revisions. */
export class ChangesWatcher {
  private since: string | number = 0;
  private readonly revs = new Map<string, string>();

  constructor(
    private readonly server: CouchServer,
    private readonly db: string,
  ) {}

  /** Starts from the database's current end (changes before are not looked at). */
  async fromNow(): Promise<this> {
    const { json } = await this.server.request('GET', this.db);
    this.since = json.update_seq as string | number;
    return this;
  }

  /** One longpoll of the feed; resolves to the ids it named. */
  private async poll(timeoutMs: number): Promise<string[]> {
    const q = `feed=longpoll&since=${encodeURIComponent(String(this.since))}&timeout=${Math.max(100, Math.min(timeoutMs, 5000))}&limit=2000`;
    const { status, json } = await this.server.request('GET', `${this.db}/_changes?${q}`);
    if (status !== 200) throw new Error(`${this.db}/_changes: HTTP ${status} ${JSON.stringify(json).slice(0, 200)}`);
    const ids: string[] = [];
    for (const c of json.results as Array<{ id: string; changes: Array<{ rev: string }> }>) {
      const rev = c.changes[0]?.rev;
      if (rev) this.revs.set(c.id, rev);
      ids.push(c.id);
    }
    this.since = json.last_seq as string | number;
    return ids;
  }

  /**
   * Resolves when every document of `expected` is at its revision (`at`: performance.now() when
   * the feed said so), or at `deadline` (Date.now() ms) with how many were.
   */
  async waitFor(expected: Map<string, string>, deadline: number): Promise<{ at: number; arrived: number }> {
    // Only the documents a poll names are looked at again, to keep the watcher cheap at 100 000.
    const pending = new Map([...expected].filter(([id, rev]) => this.revs.get(id) !== rev));
    while (pending.size > 0 && Date.now() < deadline) {
      for (const id of await this.poll(deadline - Date.now())) if (pending.get(id) === this.revs.get(id)) pending.delete(id);
    }
    return { at: performance.now(), arrived: expected.size - pending.size };
  }
}

/** Size of a pouchdb-server's request log now (bytes): where the requests of a phase start. */
export const requestLogSize = (couch: CouchServer): number => readFileSync(path.join(couch.dir, 'log.txt')).length;

/** The requests in a pouchdb-server's request log after byte `from`, counted by method and last path segment (`POST _bulk_docs`, `PUT <doc>`, …). */
export function requestsSince(couch: CouchServer, from: number): Record<string, number> {
  const out: Record<string, number> = {};
  const text = readFileSync(path.join(couch.dir, 'log.txt')).subarray(from).toString('utf8');
  for (const m of text.matchAll(/ - - ([A-Z]+) \/([^ ?]*)\S* \d{3}$/gm)) {
    const last = (m[2] as string).split('/').at(-1) ?? '';
    const k = `${m[1]} ${last.startsWith('_') ? last : '<doc>'}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}
