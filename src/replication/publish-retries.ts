// Documents whose publication failed for a reason that may pass are not left until their next
// edit. Today that is an attachment above the inline budget that could not be uploaded
// (XEP-0363: the upload service not answering, the server restarting, its quota full, no upload
// service yet). Such a document is recorded in the replication state (kind 'retry', document
// id -> RetryRecord) in the same store write as the rest of its batch, so the change feed's
// checkpoint moves on without losing it. It is handed to the publisher again, as a change read
// afresh from the database, after a wait that doubles from `firstMs` (5 s) up to `maxMs`
// (10 min). Any later publication of the document ends its entry: an edit, or the retry itself.
// The list is read from the store when the retries start, so a restart, or another cluster
// member taking over, goes on with it. It holds documents in trouble, not the database, so it
// is kept in memory as well.
//
// Midgard's D-Bus signals are not replayed and cannot be read again: there, the document's text
// itself waits, in memory only (no `state`), as the signals already waiting in the D-Bus source
// do; a later signal of the same object that is published ends the wait (midgard.ts).
//
// A Source (src/sources/source.ts) with no checkpoint: each batch is up to BATCH documents whose
// wait is over. The publisher serialises its batches, so a retry and the change feed never
// handle the same document at once.

import type { Logger } from '../log.ts';
import type { BatchHandler, Source } from '../sources/source.ts';
import type { ReplicationState, StateBatch } from './state.ts';

/** The state kind of the entries. */
export const RETRY_KIND = 'retry';

/** What the store keeps of a document waiting to be published again. */
export interface RetryRecord {
  /** When it first failed (ms since the epoch). */
  since: number;
  /** Failed attempts so far (1 after the first failure). */
  tries: number;
  /** Why the last attempt failed. */
  reason: string;
}

interface Entry<C> extends RetryRecord {
  /** When the next attempt is due (ms since the epoch). */
  due: number;
  /** What is handed over again, when it cannot be read afresh (no `read`). */
  item?: C;
}

export interface PublishRetriesOptions<C> {
  /** Where the entries are kept (and read from at start); without it, in memory only. */
  state?: ReplicationState;
  /** The name of this source (logs); e.g. `retry:couchdb:<db>`. */
  feed: string;
  log: Logger;
  /**
   * Reads the current change of each document (for the publisher, as its feed would give it).
   * Rejects with the database's error. Without it, the item given to failed() is handed over.
   */
  read?(ids: string[]): Promise<C[]>;
  /** First wait after a failure (ms; default 5 000), doubled after each failed attempt. */
  firstMs?: number;
  /** Longest wait between attempts (ms; default 600 000). */
  maxMs?: number;
}

/** Documents handed over again in one batch at most. */
const BATCH = 100;
/** Longest sleep of the loop (ms): it wakes at least this often to look at what is due. */
const IDLE_MS = 60_000;

export class PublishRetries<C> implements Source<C> {
  readonly feed: string;
  private readonly entries = new Map<string, Entry<C>>();
  private readonly firstMs: number;
  private readonly maxMs: number;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: PublishRetriesOptions<C>) {
    this.feed = o.feed;
    this.firstMs = o.firstMs ?? 5_000;
    this.maxMs = o.maxMs ?? 600_000;
  }

  /** Documents waiting to be published again. */
  get size(): number {
    return this.entries.size;
  }

  has(docId: string): boolean {
    return this.entries.has(docId);
  }

  /**
   * Records (in `batch`, with a `state`) that publishing `docId` failed for `reason`; the next
   * attempt is due after the entry's wait (firstMs, doubled per earlier failure, at most maxMs).
   * `item` is what is handed over then, when there is no `read` (it replaces an earlier one).
   * Logs the first failure as an error, later ones as warnings.
   */
  failed(batch: StateBatch | undefined, docId: string, reason: string, item?: C): void {
    const now = Date.now();
    const was = this.entries.get(docId);
    const tries = (was?.tries ?? 0) + 1;
    const wait = Math.min(this.firstMs * 2 ** Math.min(tries - 1, 30), this.maxMs);
    const entry: Entry<C> = { since: was?.since ?? now, tries, reason, due: now + wait, ...(item !== undefined ? { item } : {}) };
    this.entries.set(docId, entry);
    batch?.setRecord(RETRY_KIND, docId, { since: entry.since, tries, reason } satisfies RetryRecord);
    this.o.log[was ? 'warn' : 'error']('document not published; will try again', { doc: docId, reason, tries, retryInMs: wait });
    this.nudge();
  }

  /**
   * Ends `docId`'s entry, if it has one (in `batch`, with a `state`): it was `published` (logged),
   * or it ended otherwise (refused for good: the caller logs why).
   */
  succeeded(batch: StateBatch | undefined, docId: string, published = true): void {
    const entry = this.entries.get(docId);
    if (!entry) return;
    this.entries.delete(docId);
    batch?.deleteRecord(RETRY_KIND, docId);
    if (published) this.o.log.info('document published after failed attempts', { doc: docId, tries: entry.tries, waitedMs: Date.now() - entry.since });
  }

  /** Reads the entries from the store, then hands due documents to `handle` until stop(). `since` is unused (no checkpoint). */
  async start(_since: unknown, handle: BatchHandler<C>): Promise<void> {
    const now = Date.now();
    for (const [id, r] of (await this.o.state?.records<RetryRecord>(RETRY_KIND)) ?? []) {
      // A restart tries at once what was waiting (the cause may be what the restart fixed).
      if (!this.entries.has(id)) this.entries.set(id, { ...r, due: now });
    }
    if (this.entries.size > 0) this.o.log.info('documents waiting to be published again', { feed: this.feed, documents: this.entries.size });
    this.loop = this.run(handle);
  }

  private async run(handle: BatchHandler<C>): Promise<void> {
    while (!this.stopped) {
      const now = Date.now();
      const due: string[] = [];
      let next = now + IDLE_MS;
      for (const [id, e] of this.entries) {
        if (e.due <= now) {
          if (due.length < BATCH) due.push(id);
        } else next = Math.min(next, e.due);
      }
      if (due.length === 0) {
        await this.sleep(next - now);
        continue;
      }
      // Not due again until this attempt has failed (failed() sets the next time) or succeeded.
      for (const id of due) {
        const e = this.entries.get(id);
        if (e) e.due = now + this.maxMs;
      }
      try {
        const changes = this.o.read ? await this.o.read(due) : this.kept(due);
        if (this.stopped) break;
        if (changes.length > 0) await handle({ changes });
      } catch (err) {
        // The database or the store failing: the same documents again after the shortest wait.
        this.o.log.warn('publishing documents again failed', { feed: this.feed, documents: due.length, reason: String(err), retryInMs: this.firstMs });
        for (const id of due) {
          const e = this.entries.get(id);
          if (e) e.due = Date.now() + this.firstMs;
        }
      }
    }
  }

  /** The items kept for `ids` (an entry ended meanwhile has none). */
  private kept(ids: string[]): C[] {
    const out: C[] = [];
    for (const id of ids) {
      const item = this.entries.get(id)?.item;
      if (item !== undefined) out.push(item);
    }
    return out;
  }

  /** A failure was recorded: the loop looks again (its entry may be due before the loop's sleep ends). */
  private nudge(): void {
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = () => {
        clearTimeout(this.timer);
        this.wake = undefined;
        resolve();
      };
      this.timer = setTimeout(() => this.wake?.(), Math.max(0, ms));
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }
}
