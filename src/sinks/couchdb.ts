// Sink: writes replicated documents into a CouchDB database the way CouchDB's own replicator
// does, in batches: writes that arrive together (a page of a catch-up, live notifications a few
// milliseconds apart) are collected into one flush, which asks `_revs_diff` what the database
// lacks, records those revisions as imported in ONE replication-state batch (before the write,
// so the local publisher recognises them from the changes feed alone: no echo, no read of the
// document), and writes them with ONE `_bulk_docs` (`new_edits: false`, with the `_revisions`
// history), so revisions and conflicts are CouchDB's own and writing a revision twice changes
// nothing. Transform outputs (`upsert`) and deletions by partner retraction (`remove`) go through
// the same flushes.
// CouchDB-API servers spend most of their CPU per request, not per document (pouchdb-server:
// about 10 ms per document written one by one with `_revs_diff`, 0.75 ms in batches of 20,
// 0.45 ms in batches of 100), so a flush makes as few requests as it can: `_revs_diff` is asked
// only about revisions that may be there already (see missingRevs; a live edit new to this site
// is one `_bulk_docs` and nothing else), and the retractions waiting together read their
// documents with one `_all_docs` request.
// Writes and retractions of one document run one at a time, in the order they were called
// (notifications are handled concurrently): a retraction is decided on after the revisions
// that came before it are written. A document the database refuses fails alone (the request is
// split to find it); a request that gets no answer (network, server unavailable) is retried.
// References to XEP-0363 uploads are downloaded for the flush that writes them: at most
// FLUSH_REFERENCED_BYTES of them per flush (the documents beyond wait for the next one; a
// larger document goes alone) and DOWNLOADS_AT_ONCE at a time, so memory does not grow with a
// flush's size times the size of its attachments.

import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { LRUCache } from 'lru-cache';
import type { DocumentScope } from 'nano';
import type { CouchDoc, Json } from '../codecs/couch-doc.ts';
import type { Logger } from '../log.ts';
import { databaseMissing } from '../store/couch-answers.ts';
import type { ReplicationState } from '../replication/state.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { download } from './download.ts';
import { RefusedWrite } from './sink.ts';
import { jsonBody } from '../util/json-body.ts';

type Attachment = { hermod_url?: string; hermod_sha256?: string; length?: number; content_type?: string };

/** Most bytes of referenced uploads one flush downloads (as their references declare them). */
export const FLUSH_REFERENCED_BYTES = 64 * 1024 * 1024;
/** Most uploads downloaded at the same time by one flush. */
export const DOWNLOADS_AT_ONCE = 4;

/** Bytes of the uploads the revisions reference (their declared lengths), 0 for most documents. */
function referencedBytes(docs: readonly CouchDoc[]): number {
  let bytes = 0;
  for (const doc of docs) {
    const attachments = doc._attachments as Record<string, Attachment> | undefined;
    if (attachments === undefined) continue;
    for (const name in attachments) {
      const att = attachments[name] as Attachment;
      // A length that is no number of bytes counts as the largest (the download refuses it).
      if (typeof att.hermod_url === 'string') bytes += typeof att.length === 'number' && att.length >= 0 && Number.isFinite(att.length) ? att.length : Number.MAX_SAFE_INTEGER;
    }
  }
  return bytes;
}

/** Replaces attachment references (XEP-0363 uploads) by their verified bytes. */
async function fetchAttachments(doc: CouchDoc): Promise<void> {
  const attachments = doc._attachments as Record<string, Attachment> | undefined;
  for (const [name, att] of Object.entries(attachments ?? {})) {
    if (typeof att.hermod_url !== 'string') continue;
    if (typeof att.hermod_sha256 !== 'string' || typeof att.length !== 'number') throw new RefusedWrite(`attachment ${name} of ${doc._id}: reference without length or SHA-256`);
    const bytes = await download(att.hermod_url, att.length, att.hermod_sha256);
    (attachments as Record<string, unknown>)[name] = { content_type: att.content_type ?? 'application/octet-stream', data: bytes.toString('base64') };
  }
}

/** A transform output: a document body without a revision of its own. */
type Content = { _id: string; [key: string]: Json };

/** One document's write waiting for a flush. */
interface Op {
  id: string;
  /** Revisions to write, each with its `_revisions` history (an upsert's is made in the flush). */
  docs: CouchDoc[];
  /** A transform output to write as the next revision of the local document. */
  upsert?: Content;
  /** When it was queued for a flush (epoch ms). */
  at: number;
  /** Taken by a flush: revisions arriving now wait for the next one. */
  taken: boolean;
  /** Settles with the number of revisions written (0: the database had them all, or the upsert's content). */
  done: Promise<number>;
  resolve(written: number): void;
  reject(err: Error): void;
}

function newOp(id: string, docs: CouchDoc[], upsert?: Content): Op {
  let resolve!: (written: number) => void;
  let reject!: (err: Error) => void;
  const done = new Promise<number>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { id, docs, ...(upsert ? { upsert } : {}), at: 0, taken: false, done, resolve, reject };
}

export interface CouchSinkOptions {
  /** While writes stream in (see `streamGapMs`), how long the first waiting write waits for others to join its flush (ms). Default 200. */
  windowMs?: number;
  /** Writes count as streaming in when some arrived during the last flush and they come less than this apart on average (ms). Default 50. */
  streamGapMs?: number;
  /** Most revisions per flush (one `_bulk_docs`). Default 500. */
  maxDocs?: number;
  /** Most bytes of referenced XEP-0363 uploads per flush (declared lengths; one document beyond goes alone). Default FLUSH_REFERENCED_BYTES. */
  maxReferencedBytes?: number;
  /** Tries of a request that gets no answer (network error, 502/503/504) before the writes of its flush fail. Default 6. */
  attempts?: number;
  /** Wait before the first retry, doubled each time (ms). Default 250. */
  retryDelayMs?: number;
  /** Called each time a `_bulk_docs` of this sink answered (the database's changes feed may read now). */
  onWritten?: () => void;
}

/** HTTP statuses that say nothing about the documents sent: the same request may succeed later. */
const UNAVAILABLE = new Set([408, 429, 502, 503, 504]);
/** Error codes CouchDB and pouchdb-server give a request for the documents it carries (whatever the status: pouchdb-server answers some with 500). */
const CONTENT_ERRORS = new Set(['doc_validation', 'badarg', 'illegal_docid', 'missing_stub', 'document_too_large', 'attachment_too_large', 'too_large']);
/**
 * Whether CouchDB refused a request for what it holds (a whitelist: anything else — 401/403 while
 * credentials or _security change, a proxy's 404/405, a 5xx such as pouchdb-server's `bad_request`
 * for a closed database — may pass, and the flush is tried again): a CONTENT_ERRORS code, a 400
 * `bad_request`, or 412/413.
 */
const refusedForContent = (err: unknown): boolean => {
  const code = (err as { error?: unknown }).error;
  const status = statusOf(err);
  return (typeof code === 'string' && CONTENT_ERRORS.has(code)) || (status === 400 && code === 'bad_request') || status === 412 || status === 413;
};
const statusOf = (err: unknown): number | undefined => (err as { statusCode?: number }).statusCode;
/**
 * Whether a CouchDB request failed without an answer about its content (retry it as it is): no
 * answer, an unavailable server, or the database not there (yet: pouchdb-server answers
 * `no_db_file` for a moment after it starts; a database that stays gone fails the flush after
 * the last try).
 */
const unanswered = (err: unknown): boolean => {
  if (databaseMissing(err)) return true;
  const status = statusOf(err);
  return status === undefined || UNAVAILABLE.has(status);
};
const revHash = (rev: string): string => rev.slice(rev.indexOf('-') + 1);
/** Whether a revision carries an attachment as an XEP-0363 reference (fetched only if the database lacks it). */
const hasReference = (doc: CouchDoc): boolean => doc._attachments !== undefined && Object.values(doc._attachments as Record<string, Attachment>).some((att) => typeof att.hermod_url === 'string');
const revNumber = (rev: string): number => Number.parseInt(rev, 10);
const MAX_RETRY_DELAY_MS = 5000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class CouchSink {
  /**
   * Revisions written so far: those `_bulk_docs` took. A revision new to this site is sent
   * without asking `_revs_diff` (missingRevs), so one the database had from elsewhere (not
   * through this site's replication) counts too, although CouchDB ignored it.
   */
  written = 0;
  /** Flushes done so far (`_bulk_docs` requests, not counting those splitting a refused one). */
  flushes = 0;
  /** When the last `_bulk_docs` of this sink answered (epoch ms; 0: none yet). */
  private lastWriteAt = 0;
  private readonly onWritten: (() => void) | undefined;

  private readonly windowMs: number;
  private readonly streamGapMs: number;
  private readonly maxDocs: number;
  private readonly maxReferencedBytes: number;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  /** Per document id: writes and retractions in call order. */
  private readonly docs = new KeyedMutex();
  private readonly pending: Op[] = [];
  /** Per document id: its last write called, while no retraction or upsert was called after it. */
  private readonly open = new Map<string, Op>();
  private flushing = false;
  /** close() was called: what comes is written at once, without a batching window. */
  private closing = false;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  /** When the last write was queued (epoch ms), and the moving average of the gaps between writes (ms). */
  private lastArrival = 0;
  private meanGapMs = Number.POSITIVE_INFINITY;
  /** Writes came while the last flush ran (they keep coming): worth waiting for company. */
  private overlapped = false;
  private arrivedDuringFlush = false;
  /**
   * Revisions ("id\0rev") this sink saw the database take or have lately (`_bulk_docs`
   * accepted them, or `_revs_diff` said it has them): the same revision arriving again (a
   * document in two tags comes from two nodes; a catch-up overlapping live notifications) is
   * dropped without asking. Bounded; forgotten on restart (then asked as before) and whenever
   * CouchDB answers that the database is missing (it may come back empty).
   */
  private readonly present = new LRUCache<string, true>({ max: 50_000 });
  /** Retractions waiting for their document's current revision (the next `_all_docs`), by id. */
  private readonly toRead = new Map<string, Array<{ resolve(doc: CouchDoc | undefined): void; reject(err: Error): void }>>();
  private reading = false;

  constructor(
    private readonly db: DocumentScope<unknown>,
    private readonly state: ReplicationState,
    private readonly log: Logger,
    options: CouchSinkOptions = {},
  ) {
    // Measured at N = 4 partners (quick rounds, pairs back to back): 200 ms and 500 revisions
    // against 50 ms and 250 gave ~8 % on Hermod ÷ pulls and ~4 % less partner CPU per copy, with
    // fewer `_bulk_docs` per document; three full runs after stayed within the machine's drift
    // (docs/PERFORMANCE.md, session 19). A lone edit, or writes further apart, is not delayed.
    this.windowMs = options.windowMs ?? 200;
    this.streamGapMs = options.streamGapMs ?? 50;
    this.maxDocs = options.maxDocs ?? 500;
    this.maxReferencedBytes = options.maxReferencedBytes ?? FLUSH_REFERENCED_BYTES;
    this.attempts = options.attempts ?? 6;
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.onWritten = options.onWritten;
  }

  /**
   * Writes revisions of one document (each with its history; attachments inline or as verified
   * XEP-0363 references), after the writes and retractions of that document called before.
   * Only the revisions the database lacks are written. Rejects when a revision has no
   * `_revisions`, an attachment reference does not verify, or CouchDB refuses the document.
   */
  write(docs: CouchDoc[]): Promise<void> {
    const first = docs[0];
    if (!first) return Promise.resolve();
    for (const doc of docs) if (!doc._revisions) return Promise.reject(new RefusedWrite(`document ${doc._id} ${doc._rev} carries no _revisions history`));
    // Revisions merge into CouchDB's tree in any order: those of a write still waiting for its
    // turn join it (a document edited many times goes in one flush, not one flush per edit).
    const open = this.open.get(first._id);
    const op = open && !open.taken ? open : newOp(first._id, []);
    op.docs.push(...docs);
    if (op !== open) {
      this.open.set(op.id, op);
      void this.inTurn(op);
    }
    return op.done.then(() => undefined);
  }

  /**
   * Writes what waits at once (no batching window) and resolves once every write and removal
   * called so far has settled, each bounded by the sink's tries (`attempts`). Writes called
   * later are still taken, at once. Errors: none (each write's caller hears of its failure).
   */
  async close(): Promise<void> {
    this.closing = true;
    this.schedule();
    await this.docs.idle();
  }

  /**
   * Whether this sink is writing into its database now, or its last `_bulk_docs` answered less
   * than `ms` ago: documents are streaming in (the changes feed of that database then polls
   * instead of longpolling, see CouchChangesSource `importing`).
   */
  wroteWithin(ms: number): boolean {
    return this.flushing || Date.now() - this.lastWriteAt < ms;
  }

  /** Queues an op for a flush once the work on its document called before it is done. */
  private inTurn(op: Op): Promise<number> {
    const settled = this.docs.run(op.id, () => this.enqueue(op));
    void settled.catch(() => undefined); // the callers handle op.done
    void op.done.then(
      () => this.closeOp(op),
      () => this.closeOp(op),
    );
    return op.done;
  }

  private closeOp(op: Op): void {
    if (this.open.get(op.id) === op) this.open.delete(op.id);
  }

  /**
   * Writes a document that has no revision history of its own (the output of a transform) as
   * the next revision of the local one, through the same flushes as replicated revisions
   * (recorded as imported before the write, so it is not published back). The revision id is
   * derived from the content and the previous revision, so writing the same output twice adds
   * nothing. Resolves to false when the local document already has this content.
   */
  upsert(content: Content): Promise<boolean> {
    this.open.delete(content._id); // later writes wait for this one
    return this.inTurn(newOp(content._id, [], content)).then((written) => written > 0);
  }

  /**
   * A retraction, after the writes of that document called before it. The local document is
   * deleted (as a new revision of this site, not a purge) only when its winning revision came
   * from a partner and `keep` — asked with that revision, e.g. whether the source still offers
   * the document or already sent its deletion — gives no reason to keep it. A local edit is never
   * deleted by a remote retraction (CouchDB semantics: an edit beats a concurrent deletion), and
   * a document that is deleted already (a replayed retraction) is left as it is. The deletion
   * revision's id is derived from the revision it deletes (a replay writes nothing new) and goes
   * through the flushes like any imported revision; a local edit made meanwhile stays the
   * winner. Resolves to whether a deletion revision was written.
   */
  remove(docId: string, keep: (current: CouchDoc) => Promise<string | undefined>): Promise<boolean> {
    this.open.delete(docId); // later writes wait for this one
    return this.docs.run(docId, () => this.removeNow(docId, keep));
  }

  private async removeNow(docId: string, keep: (current: CouchDoc) => Promise<string | undefined>): Promise<boolean> {
    const current = await this.currentOf(docId);
    if (!current) return false; // not there, or deleted already
    const reason = (await this.state.revKind(docId, current._rev)) === 'i' ? await keep(current) : 'its current revision is a local edit';
    if (reason !== undefined) {
      this.log.debug('partner retraction: document kept', { doc: docId, rev: current._rev, reason });
      return false;
    }
    const start = revNumber(current._rev) + 1;
    const hash = createHash('md5').update(`${current._rev}\n_deleted`).digest('hex');
    const tombstone = { _id: docId, _rev: `${start}-${hash}`, _deleted: true, _revisions: { start, ids: [hash, revHash(current._rev)] } } as CouchDoc;
    await this.enqueue(newOp(docId, [tombstone]));
    this.log.debug('document deleted by partner retraction', { doc: docId, rev: tombstone._rev });
    return true;
  }

  /**
   * The winning revision of a document (undefined: none, or deleted), read together with those
   * the other retractions ask for meanwhile: the ids asked in one turn of the event loop, or
   * while a read is under way, go in the next one `_all_docs` request.
   */
  private currentOf(docId: string): Promise<CouchDoc | undefined> {
    return new Promise((resolve, reject) => {
      this.toRead.set(docId, [...(this.toRead.get(docId) ?? []), { resolve, reject }]);
      if (this.reading) return;
      this.reading = true;
      setImmediate(() => void this.readCurrents());
    });
  }

  private async readCurrents(): Promise<void> {
    while (this.toRead.size > 0) {
      const waiting = [...this.toRead];
      this.toRead.clear();
      try {
        const current = await this.currentDocs(waiting.map(([id]) => id));
        for (const [id, callers] of waiting) for (const c of callers) c.resolve(current.get(id));
      } catch (err) {
        for (const [, callers] of waiting) for (const c of callers) c.reject(err as Error);
      }
    }
    this.reading = false;
  }

  /** The winning revision of each document of `ids` that exists and is not deleted, in one `_all_docs` request (retried while unanswered). */
  private async currentDocs(ids: string[]): Promise<Map<string, CouchDoc>> {
    type Row = { key: string; value?: { rev: string; deleted?: boolean }; doc?: CouchDoc | null };
    const rows = (await this.retried('_all_docs', () => this.db.fetch({ keys: ids }))).rows as unknown as Row[];
    return new Map(rows.filter((r) => r.doc && !r.value?.deleted).map((r) => [r.key, r.doc as CouchDoc]));
  }

  /** Queues one document's write for a flush; resolves when it is written. */
  private enqueue(op: Op): Promise<number> {
    const now = Date.now();
    const gap = now - this.lastArrival;
    this.meanGapMs = Number.isFinite(this.meanGapMs) ? 0.8 * this.meanGapMs + 0.2 * gap : gap;
    this.lastArrival = now;
    if (this.flushing) this.arrivedDuringFlush = true;
    op.at = now;
    this.pending.push(op);
    this.schedule();
    return op.done;
  }

  /**
   * When the next flush starts. While writes keep coming (some arrived during the last flush,
   * and on average less than `streamGapMs` apart), once the oldest waiting one has waited
   * `windowMs`, so that many go in one flush (CouchDB's cost is mostly per request); else at
   * once (setImmediate, after the I/O callbacks of this turn: a page's writes still go together;
   * setTimeout(0) waited a whole millisecond, 1 ms of every lone edit's latency), so a lone edit is
   * not delayed. Always at once when `maxDocs` revisions wait. One flush at a time: what comes
   * meanwhile waits for the next.
   */
  private schedule(): void {
    if (this.flushing || this.pending.length === 0) return;
    let waiting = 0;
    for (const op of this.pending) waiting += Math.max(1, op.docs.length); // a loop, not reduce(): see src/util/hot-loops.md
    const now = Date.now();
    const oldest = (this.pending[0] as Op).at;
    const streaming = this.overlapped && this.meanGapMs < this.streamGapMs;
    const due = this.closing || waiting >= this.maxDocs || !streaming ? now : oldest + this.windowMs;
    clearTimeout(this.timer);
    clearImmediate(this.immediate);
    if (due <= now) this.immediate = setImmediate(() => void this.flush());
    else this.timer = setTimeout(() => void this.flush(), due - now);
  }

  /** Takes what waits (up to `maxDocs` revisions) and writes it; then schedules the rest. */
  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    this.arrivedDuringFlush = false;
    const ops: Op[] = [];
    let count = 0;
    let referenced = 0;
    while (this.pending.length > 0 && (ops.length === 0 || count + Math.max(1, (this.pending[0] as Op).docs.length) <= this.maxDocs)) {
      const head = this.pending[0] as Op;
      const bytes = referencedBytes(head.upsert ? [...head.docs, head.upsert as unknown as CouchDoc] : head.docs);
      if (ops.length > 0 && referenced + bytes > this.maxReferencedBytes) break;
      const op = this.pending.shift() as Op;
      op.taken = true;
      ops.push(op);
      count += Math.max(1, op.docs.length);
      referenced += bytes;
    }
    try {
      await this.writeBatch(ops);
    } catch (err) {
      // A failure of the whole flush (the state store, or CouchDB unanswered after every try).
      for (const op of ops) op.reject(err as Error);
    } finally {
      this.flushing = false;
      this.overlapped = this.arrivedDuringFlush;
      this.schedule();
    }
  }

  /** One flush: upserts' current documents, `_revs_diff`, downloads, one state batch, one `_bulk_docs`. */
  private async writeBatch(all: Op[]): Promise<void> {
    let ops = await this.prepareUpserts(all);
    const missing = await this.missingRevs(ops);
    const writes = new Map<Op, CouchDoc[]>();
    for (const op of ops) {
      const lacking = missing.get(op.id);
      // Each missing revision once (the leaves a publisher sends again with each edit are merged in).
      const docs = op.docs.filter((d) => lacking?.delete(d._rev));
      if (docs.length === 0) op.resolve(0); // the database has them all (a replay, or another partner was first)
      else writes.set(op, docs);
    }
    // References to XEP-0363 uploads: fetched only for revisions the database lacks, a few at a time.
    const withReferences = [...writes].filter(([, docs]) => docs.some(hasReference));
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(DOWNLOADS_AT_ONCE, withReferences.length) }, async () => {
        while (next < withReferences.length) {
          const [op, docs] = withReferences[next++] as [Op, CouchDoc[]];
          try {
            for (const doc of docs) await fetchAttachments(doc);
          } catch (err) {
            writes.delete(op);
            op.reject(err as Error);
          }
        }
      }),
    );
    if (writes.size === 0) return;
    ops = [...writes.keys()];
    await this.state.markRevsOfMany(
      ops.map((op) => [op.id, (writes.get(op) as CouchDoc[]).map((d) => d._rev)] as const),
      'i',
    );
    this.flushes++;
    await this.bulk(ops, writes);
    this.log.debug('flush written', { db: this.db.config.db, docs: ops.length, asked: all.length });
  }

  /**
   * Turns upserts into revisions: the current documents in one `_all_docs` request; an output
   * equal to its document resolves to 0 (nothing to write). Returns the ops left to write.
   */
  private async prepareUpserts(ops: Op[]): Promise<Op[]> {
    const upserts = ops.filter((op) => op.upsert);
    if (upserts.length === 0) return ops;
    let current: Map<string, CouchDoc>;
    try {
      current = await this.currentDocs(upserts.map((op) => op.id));
    } catch (err) {
      for (const op of upserts) op.reject(err as Error);
      return ops.filter((op) => !op.upsert);
    }
    return ops.filter((op) => {
      if (!op.upsert) return true;
      const doc = this.nextRevision(op.upsert, current.get(op.id));
      if (!doc) op.resolve(0);
      else op.docs = [doc];
      return doc !== undefined;
    });
  }

  /** The revision of `content` that follows `current` (undefined: `current` has this content). */
  private nextRevision(content: Content, current: CouchDoc | undefined): CouchDoc | undefined {
    const { _rev: _r, _revisions: _h, ...body } = content;
    if (current) {
      const { _rev, _revisions, ...was } = current;
      if (isDeepStrictEqual(was, body)) return undefined;
    }
    const start = current ? revNumber(current._rev) + 1 : 1;
    const hash = createHash('md5').update(`${current?._rev ?? ''}\n${JSON.stringify(body)}`).digest('hex');
    return { ...body, _rev: `${start}-${hash}`, _revisions: { start, ids: current ? [hash, revHash(current._rev)] : [hash] } } as CouchDoc;
  }

  /**
   * Per document id, the revisions the database lacks. Only revisions that may be there already
   * are asked about (one `_revs_diff`): those the replication state knows (imported or
   * published here: a replayed history, leaves a partner sends again with each edit, a write a
   * crash cut after recording it) and those with an XEP-0363 reference (not downloaded for
   * nothing), unless this sink saw the database take them lately (`present`). The others are
   * new to this site and count as lacking without a request: the database can have one only
   * from outside this site's replication, and `_bulk_docs` with `new_edits: false` ignores a
   * revision the database has. All of them if CouchDB cannot say.
   */
  private async missingRevs(ops: Op[]): Promise<Map<string, Set<string>>> {
    const all = new Map<string, Set<string>>();
    const referenced = new Set<string>();
    for (const op of ops) {
      for (const d of op.docs) {
        if (this.present.has(`${op.id}\0${d._rev}`)) continue; // the database has it
        all.set(op.id, (all.get(op.id) ?? new Set()).add(d._rev));
        if (hasReference(d)) referenced.add(`${op.id}\0${d._rev}`);
      }
    }
    if (all.size === 0) return all;
    const wanted = [...all].map(([id, revs]) => ({ id, revs: [...revs] }));
    const kinds = await this.state.revKindsMany(wanted);
    const asked: Record<string, string[]> = {};
    for (const [i, { id, revs }] of wanted.entries()) {
      const maybeThere = revs.filter((rev, j) => kinds[i]?.[j] !== undefined || referenced.has(`${id}\0${rev}`));
      if (maybeThere.length > 0) asked[id] = maybeThere;
    }
    if (Object.keys(asked).length === 0) return all;
    let res: Record<string, { missing?: string[] }>;
    try {
      res = (await this.retried('_revs_diff', () => this.db.server.request({ db: this.db.config.db, path: '_revs_diff', method: 'POST', body: asked }))) as typeof res;
    } catch (err) {
      if (unanswered(err)) throw err;
      // A request refused for its content (e.g. a malformed revision): _bulk_docs finds which.
      this.log.debug('_revs_diff refused; writing every revision', { reason: String(err) });
      return all;
    }
    for (const [id, revs] of Object.entries(asked)) {
      const missing = new Set(res[id]?.missing ?? []);
      for (const rev of revs) {
        if (missing.has(rev)) continue;
        all.get(id)?.delete(rev);
        this.present.set(`${id}\0${rev}`, true);
      }
    }
    return all;
  }

  /**
   * One `_bulk_docs` (`new_edits: false`) for the ops; rejects only the documents CouchDB
   * refuses. A request refused as a whole (pouchdb-server refuses every document for one bad
   * one) is split in halves until the bad documents are alone.
   */
  private async bulk(ops: Op[], writes: Map<Op, CouchDoc[]>): Promise<void> {
    let res: Array<{ id?: string; error?: string; reason?: string }>;
    try {
      // A Buffer body (util/json-body.ts); nano's types lack new_edits, which CouchDB's replication protocol uses.
      res = (await this.retried('_bulk_docs', () => this.db.bulk(jsonBody({ docs: ops.flatMap((op) => writes.get(op) as CouchDoc[]), new_edits: false }) as never))) as unknown as typeof res;
    } catch (err) {
      // Not about the documents (credentials or _security being changed, a server error): the
      // whole flush fails and is tried again; only a request refused for its content is split.
      if (unanswered(err) || !refusedForContent(err)) throw err;
      if (ops.length === 1) {
        const op = ops[0] as Op;
        this.log.warn('document refused by CouchDB', { doc: op.id, revs: (writes.get(op) as CouchDoc[]).map((d) => d._rev), reason: String(err) });
        op.reject(new RefusedWrite(`CouchDB refused ${op.id}: ${String(err)}`));
        return;
      }
      const half = Math.ceil(ops.length / 2);
      await this.bulk(ops.slice(0, half), writes);
      await this.bulk(ops.slice(half), writes);
      return;
    }
    this.lastWriteAt = Date.now();
    this.onWritten?.();
    // With new_edits=false CouchDB lists only the documents it refused (by id).
    const refused = new Map<string, { error?: string; reason?: string }>();
    for (const row of Array.isArray(res) ? res : []) if (row.error) refused.set(row.id ?? '', row);
    for (const op of ops) {
      const failed = refused.get(op.id);
      if (failed) {
        this.log.warn('document refused by CouchDB', { doc: op.id, error: failed.error, reason: failed.reason });
        // `unauthorized` names who writes (a member being removed or added, a role being granted):
        // it may pass. `forbidden` and the rest name the document.
        op.reject(new (failed.error === 'unauthorized' ? Error : RefusedWrite)(`CouchDB refused ${op.id}: ${failed.error} ${failed.reason ?? ''}`));
        continue;
      }
      const revs = (writes.get(op) as CouchDoc[]).map((d) => d._rev);
      for (const rev of revs) this.present.set(`${op.id}\0${rev}`, true);
      this.written += revs.length;
      this.log.debug('document written', { doc: op.id, revs });
      op.resolve(revs.length);
    }
  }

  /** Runs a CouchDB request, again after 0.25 s, 0.5 s, … (at most 5 s apart) while it gets no answer; throws the last error. */
  private async retried<T>(what: string, request: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await request();
      } catch (err) {
        // A database that is gone may come back empty (deleted and created again, restored):
        // what this sink saw it take is no longer known to be there.
        if (databaseMissing(err)) this.present.clear();
        if (!unanswered(err) || attempt >= this.attempts) throw err;
        const delayMs = Math.min(MAX_RETRY_DELAY_MS, this.retryDelayMs * 2 ** (attempt - 1));
        this.log.warn(`CouchDB ${what} failed; trying again`, { db: this.db.config.db, attempt, retryInMs: delayMs, reason: String(err) });
        await sleep(delayMs);
      }
    }
  }
}
