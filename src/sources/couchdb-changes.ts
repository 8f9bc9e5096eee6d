// Source: a CouchDB database's _changes feed, read with longpoll requests one batch at a time:
// each batch is fully handled before the next is asked for, and the next is asked for at once.
// (nano's changesReader in `wait` mode polls every 100 ms for its resume and so added up to
// 100 ms per batch: most of a single edit's replication latency.) The checkpoint (opaque seq) is
// stored only after the handler has finished with a batch, so a crash or restart resumes there:
// nothing is lost, and what was acknowledged is not handed over again. A Source (source.ts):
// each batch carries the feed's last_seq as its checkpoint; a batch whose handler rejects is
// handed over again (backoff 0.5 s doubling to 30 s) until it is handled or the source stops.
// Each change carries every leaf revision (`style=all_docs`), so a publisher can skip what it
// already knows without reading the document, and read the rest of a batch with one
// `_bulk_get` (bulkGetRevisions) instead of one request per document. With `readAhead`, the
// next page is read while a batch is handled, and every page's changes are told as soon as it is
// read (a page read while nothing is handled too: a lone edit's documents are read at once,
// alongside the handler's own look-ups), so reading overlaps publishing; the next page is asked
// for once that read answered (not beside it: see `readAhead`); the checkpoint rule is
// unchanged.
// While this site's own replication sink streams partners' documents into the database
// (`importing`), the feed does not longpoll: it reads with a plain `_changes` request each time
// the sink says it wrote (`nudge()`), else `pollMs` after the last read. pouchdb-server answers
// a longpoll that has to wait by setting up a live changes feed, which costs it about 5 ms of
// CPU and returns after ONE change, so each `_bulk_docs` of the sink woke 2–3 requests, most of
// its cost per imported document; a plain request costs it under 1 ms. A lone local edit is
// still seen at once (longpoll, while nothing is imported); one made while imports stream in
// waits up to `pollMs`.

import type { DocumentScope } from 'nano';
import type { CouchDoc } from '../codecs/couch-doc.ts';
import type { Logger } from '../log.ts';
import type { BatchHandler, Checkpoint, Source } from './source.ts';
import { jsonBody } from '../util/json-body.ts';

export interface Change {
  id: string;
  deleted: boolean;
  seq: unknown;
  /** Every leaf revision of the document at this change (`style=all_docs`: live and deleted, conflicts included). */
  revs: string[];
}

export interface ChangesSourceOptions {
  db: DocumentScope<unknown>;
  /** Name under which the checkpoint is stored. */
  feed: string;
  log: Logger;
  batchSize?: number;
  /**
   * Told of each batch's changes as soon as they are read, before the batch is handed over: e.g.
   * to start reading its documents. The page after a batch is read while that batch is handled,
   * and told then; it is handed over as usual once the one before is handled. When it returns a
   * promise (the documents' read), the next page is asked for once that settles: a longpoll
   * sent beside the read made the database set up a live feed while it should be answering the
   * read (pouchdb-server: ~5 ms of CPU, most of a lone edit's `_bulk_get` time). The promise
   * should not reject (a rejection is ignored).
   */
  readAhead?: (changes: Change[]) => void | Promise<unknown>;
  /**
   * Whether this site's own replication sink is writing into the database (documents streaming
   * in from partners): then the feed reads with plain requests when nudged (`nudge()`) or
   * `pollMs` after the last, instead of longpolls (see the head comment). Default: never.
   */
  importing?: () => boolean;
  /** While `importing` and not nudged, the gap between plain reads (ms). Default 250. */
  pollMs?: number;
}

/** One row of `_changes?style=all_docs`. */
export interface ChangesRow {
  id: string;
  deleted?: boolean;
  seq: unknown;
  changes?: Array<{ rev?: string }>;
}

interface ChangesPage {
  results?: ChangesRow[];
  last_seq?: Checkpoint;
}

/** A `_changes?style=all_docs` row as a Change (its leaf revisions in the feed's order). */
export const changeOf = (r: ChangesRow): Change => {
  const revs: string[] = []; // a loop, not flatMap(): see src/util/hot-loops.md
  for (const c of r.changes ?? []) if (typeof c.rev === 'string') revs.push(c.rev);
  return { id: r.id, deleted: r.deleted === true, seq: r.seq, revs };
};

export class CouchChangesSource implements Source<Change> {
  readonly feed: string;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;
  /** Ends the pause between plain reads while importing (nudge()); `nudged`: a write came during a read. */
  private resume: (() => void) | undefined;
  private nudged = false;

  constructor(private readonly options: ChangesSourceOptions) {
    this.feed = options.feed;
  }

  /** Waits `ms` (bounded), or less when stopped. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /**
   * Tells the feed that its database was just written to (this site's sink): while importing,
   * the next plain read goes now instead of after `pollMs`. Cheap; any time.
   */
  nudge(): void {
    this.nudged = true;
    this.resume?.();
  }

  /** While importing, waits until nudged (at once if nudged since the last read), `ms` or stop. */
  private pause(ms: number): Promise<void> {
    if (this.nudged || this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.resume = done;
    }).finally(() => (this.resume = undefined));
  }

  /** Follows the feed from `since` (undefined: from the beginning); the handler must log and skip a bad document, not reject. */
  async start(from: Checkpoint | undefined, handle: BatchHandler<Change>): Promise<void> {
    const { db, log, feed } = this.options;
    let since: Checkpoint = from ?? '0';
    log.info('following changes', { feed, since });
    this.abort = new AbortController();
    const signal = this.abort.signal;
    const limit = this.options.batchSize ?? 200;
    const importing = (): boolean => this.options.importing?.() === true;
    /** A longpoll (`wait`), or a plain read that answers at once. */
    const read = (from: Checkpoint, wait = !importing()): Promise<ChangesPage> =>
      db.server.relax({
        db: db.config.db,
        path: '_changes',
        method: 'GET',
        qs: { ...(wait ? { feed: 'longpoll', timeout: 25_000 } : { feed: 'normal' }), since: from, limit, style: 'all_docs' },
        signal,
      } as never) as Promise<ChangesPage>;
    this.loop = (async () => {
      let backoff = 0;
      /** The page after the one being handled, read meanwhile (its changes told to readAhead). */
      let ahead: Promise<ChangesPage> | undefined;
      /** The last page had less than `limit` changes: while importing, the next read waits `pollMs`. */
      let caughtUp = false;
      /** Settles when readAhead has read the documents of the page now handled. */
      let pageRead: Promise<unknown> | void = undefined;
      while (!this.stopped) {
        let page: ChangesPage;
        const told = ahead !== undefined;
        try {
          if (!ahead && caughtUp && importing()) await this.pause(this.options.pollMs ?? 250);
          if (this.stopped) break;
          if (!ahead) this.nudged = false; // what is written from now on, this read may miss
          page = await (ahead ?? read(since));
          backoff = 0;
        } catch (err) {
          if (this.stopped) break;
          backoff = Math.min(backoff ? backoff * 2 : 1000, 60_000);
          const e = err as Error & { statusCode?: number };
          log.warn('changes feed interrupted; retrying with backoff', { feed, reason: e.message, status: e.statusCode, retryInMs: backoff });
          await this.sleep(backoff);
          continue;
        } finally {
          ahead = undefined;
        }
        const results = page.results ?? [];
        caughtUp = results.length < limit;
        if (results.length > 0) {
          const changes = results.map(changeOf);
          if (!told) pageRead = this.options.readAhead?.(changes);
          // While importing, a short page is followed by a pause (above), not by a read at once.
          if (page.last_seq !== undefined && this.options.readAhead && !(caughtUp && importing())) {
            const readAhead = this.options.readAhead;
            const from = page.last_seq;
            ahead = Promise.resolve(pageRead)
              .catch(() => undefined)
              .then(() => read(from))
              .then((next) => {
                pageRead = (next.results ?? []).length > 0 ? readAhead((next.results ?? []).map(changeOf)) : undefined;
                return next;
              });
            ahead.catch(() => {}); // seen (and retried) when awaited above
          }
          // Retry the same batch until it is handled.
          for (let delay = 500; !this.stopped; delay = Math.min(delay * 2, 30_000)) {
            try {
              await handle({ changes, ...(page.last_seq !== undefined ? { checkpoint: page.last_seq } : {}) });
              break;
            } catch (err) {
              log.error('change batch failed; retrying', { feed, reason: String(err), retryInMs: delay });
              await this.sleep(delay);
            }
          }
          if (this.stopped) break; // not handled: the checkpoint stays before this batch
        }
        if (page.last_seq !== undefined) since = page.last_seq;
      }
    })();
  }

  /** Stops reading and waits for the batch under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    this.wake?.();
    this.resume?.();
    await this.loop;
  }
}

/** One `_bulk_get` row: the revisions asked for (`ok`) or why one could not be read. */
interface BulkGetResult {
  results?: Array<{ id: string; docs: Array<{ ok?: CouchDoc; error?: { error?: string; reason?: string } }> }>;
}

/**
 * Reads given revisions of many documents in ONE request (CouchDB `POST /db/_bulk_get`,
 * replication protocol; pouchdb-server has it through express-pouchdb), each with its
 * `_revisions` history; with `attachments`, attachment bodies inline (base64), else stubs (with
 * `length`, `digest`, `content_type`). Resolves to id -> the revisions read, in the order asked;
 * a document missing from the map had a revision that could not be read (compacted away, the
 * document purged meanwhile): the caller reads it otherwise. Rejects with nano's error when the
 * request fails (no such database, CouchDB down).
 */
export async function bulkGetRevisions(db: DocumentScope<unknown>, wanted: Array<{ id: string; revs: string[] }>, attachments: boolean): Promise<Map<string, CouchDoc[]>> {
  const out = new Map<string, CouchDoc[]>();
  const docs: Array<{ id: string; rev: string }> = []; // a loop, not flatMap(): see src/util/hot-loops.md
  for (const w of wanted) for (const rev of w.revs) docs.push({ id: w.id, rev });
  if (docs.length === 0) return out;
  const res = (await db.server.relax({
    db: db.config.db,
    path: '_bulk_get',
    method: 'POST',
    qs: { revs: true, ...(attachments ? { attachments: true } : {}) },
    body: jsonBody({ docs }),
  } as never)) as BulkGetResult;
  const failed = new Set<string>();
  for (const row of res.results ?? []) {
    for (const d of row.docs) {
      if (!d.ok || typeof d.ok._rev !== 'string') failed.add(row.id);
      else out.set(row.id, [...(out.get(row.id) ?? []), d.ok]);
    }
  }
  for (const w of wanted) if (failed.has(w.id) || (out.get(w.id)?.length ?? 0) !== w.revs.length) out.delete(w.id);
  return out;
}
