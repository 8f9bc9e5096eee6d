// Documents whose publication failed for a reason that may pass are not left until their next
// edit. Today that is an attachment above the inline budget that could not be uploaded
// (XEP-0363: the upload service not answering, the server restarting or down); a refusal that
// decides (too large, not allowed) is final and not tried again. Each such document waits here
// with the change that failed (the item), and is handed to the publisher again after a wait
// that doubles from `firstMs` (5 s) up to `maxMs` (10 min). Any later handling of the document
// that decides it ends the wait: its publication, an edit published meanwhile, a refusal for
// good. The publisher checks, in its own turn (no batch of its runs meanwhile), that the item
// is still the one waiting (`holds`) and still current, so an older version never follows a
// newer one.
//
// Ajatus keeps the entries in the replication state (kind 'retry', document id -> RetryRecord
// with the change), written in the same store write as the rest of the failed batch, so the
// changes feed's checkpoint moves on without losing the document; they are read again when the
// retries start (a restart, or another cluster member taking the work over: tried at once).
// Midgard's D-Bus signals are not replayed: there the document's text waits in memory only (no
// `state`), bounded by `maxItems` and `maxBytes`, as the signals waiting in the D-Bus source are.
//
// A Source (src/sources/source.ts) with no checkpoint: it hands over one item whose wait is over
// at a time (the publisher's other work goes on between two), and after an item that failed
// again it hands over nothing more until that item's next attempt is due: while the upload
// service is down, one attempt per wait — not one per waiting document, each taking a request's
// timeout while the publisher's turn is held.

import type { Logger } from '../log.ts';
import type { BatchHandler, Source } from '../sources/source.ts';
import type { ReplicationState, StateBatch } from './state.ts';

/** The state kind of the entries. */
export const RETRY_KIND = 'retry';

/** What the store keeps of a document waiting to be published again. */
export interface RetryRecord<C = unknown> {
  /** When it first failed (ms since the epoch). */
  since: number;
  /** Failed attempts so far (1 after the first failure). */
  tries: number;
  /** Why the last attempt failed. */
  reason: string;
  /** What is handed over again (the change that failed). */
  item: C;
}

interface Entry<C> extends RetryRecord<C> {
  /** When the next attempt is due (ms since the epoch); Infinity while it is handed over. */
  due: number;
}

export interface PublishRetriesOptions<C> {
  /** Where the entries are kept (and read from at start); without it, in memory only. */
  state?: ReplicationState;
  /** The name of this source (logs); e.g. `retry:couchdb:<db>`. */
  feed: string;
  log: Logger;
  /** First wait after a failure (ms; default 5 000), doubled after each failed attempt. */
  firstMs?: number;
  /** Longest wait between attempts (ms; default 600 000). */
  maxMs?: number;
  /** Most documents waiting at once (default 10 000): a failure beyond is not kept (logged). */
  maxItems?: number;
  /** Most bytes of items waiting at once, by `size` (default 256 MiB). */
  maxBytes?: number;
  /** An item's size in bytes, for maxBytes (default 0: not counted). */
  size?(item: C): number;
}

/** Longest sleep of the loop (ms): it wakes at least this often to look at what is due. */
const IDLE_MS = 60_000;

export class PublishRetries<C> implements Source<C> {
  readonly feed: string;
  private readonly entries = new Map<string, Entry<C>>();
  private readonly firstMs: number;
  private readonly maxMs: number;
  private bytes = 0;
  /** The document handed over now, and whether it failed again meanwhile (failed()). */
  private handing: string | undefined;
  private failedAgain = false;
  /** retryNow() came while a document was handed over: its failure does not pause the others. */
  private nudged = false;
  /** Nothing is handed over before this (ms since the epoch): an item failed again. */
  private pausedUntil = 0;
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

  /** What waits for `docId`, if anything. */
  item(docId: string): C | undefined {
    return this.entries.get(docId)?.item;
  }

  /** Whether `item` is what waits for `docId` (not ended, not replaced by a later failure since it was handed over). */
  holds(docId: string, item: C): boolean {
    return this.entries.get(docId)?.item === item;
  }

  /**
   * Records (in `batch`, with a `state`) that publishing `item` of `docId` failed for `reason`;
   * it replaces what waited for `docId`. The next attempt is due after the entry's wait (firstMs,
   * doubled per earlier failure, at most maxMs). Logs the first failure as an error, later ones
   * as warnings. Returns false when it is not kept (maxItems or maxBytes reached: logged as an
   * error, the document then waits for its next change).
   */
  failed(batch: StateBatch | undefined, docId: string, reason: string, item: C): boolean {
    const now = Date.now();
    const was = this.entries.get(docId);
    const size = this.o.size?.(item) ?? 0;
    const bytes = this.bytes - (was ? (this.o.size?.(was.item) ?? 0) : 0) + size;
    if ((!was && this.entries.size >= (this.o.maxItems ?? 10_000)) || bytes > (this.o.maxBytes ?? 256 * 1024 * 1024)) {
      this.o.log.error('document not published, and too many wait already to keep it: it waits for its next change', { doc: docId, reason, waiting: this.entries.size, bytes: this.bytes });
      if (was) this.end(batch, docId);
      return false;
    }
    const tries = (was?.tries ?? 0) + 1;
    const wait = this.wait(tries);
    if (docId === this.handing) this.failedAgain = true;
    const entry: Entry<C> = { since: was?.since ?? now, tries, reason, item, due: now + wait };
    this.entries.set(docId, entry);
    this.bytes = bytes;
    if (batch) batch.setRecord(RETRY_KIND, docId, { since: entry.since, tries, reason, item } satisfies RetryRecord<C>);
    this.o.log[was ? 'warn' : 'error']('document not published; will try again', { doc: docId, reason, tries, retryInMs: wait });
    this.wake?.();
    return true;
  }

  /**
   * Ends `docId`'s entry, if it has one (in `batch`, with a `state`): it was `published` (logged),
   * or it ended otherwise (a newer version handled or to come, a refusal for good: the caller
   * logs why).
   */
  succeeded(batch: StateBatch | undefined, docId: string, published = true): void {
    const entry = this.end(batch, docId);
    if (entry && published) this.o.log.info('document published after failed attempts', { doc: docId, tries: entry.tries, waitedMs: Date.now() - entry.since });
  }

  private end(batch: StateBatch | undefined, docId: string): Entry<C> | undefined {
    const entry = this.entries.get(docId);
    if (!entry) return undefined;
    this.entries.delete(docId);
    this.bytes -= this.o.size?.(entry.item) ?? 0;
    batch?.deleteRecord(RETRY_KIND, docId);
    return entry;
  }

  /**
   * Every waiting document is due now, and a pause after a failure ends: the cause may be gone
   * (the component is online again after the server restarted). One still fails again: the
   * waits go on from where they were.
   */
  retryNow(): void {
    const now = Date.now();
    for (const e of this.entries.values()) if (e.due !== Infinity) e.due = now;
    this.pausedUntil = 0;
    if (this.handing !== undefined) this.nudged = true;
    this.wake?.();
  }

  /** The wait after `tries` failed attempts (ms). */
  private wait(tries: number): number {
    return Math.min(this.firstMs * 2 ** Math.min(tries - 1, 30), this.maxMs);
  }

  /** Reads the entries from the store (with a `state`), then hands due items to `handle`, one at a time, until stop(). `since` is unused (no checkpoint). */
  async start(_since: unknown, handle: BatchHandler<C>): Promise<void> {
    const now = Date.now();
    for (const [id, r] of (await this.o.state?.records<RetryRecord<C>>(RETRY_KIND)) ?? []) {
      // A restart tries at once what was waiting (the cause may be what the restart fixed).
      if (!this.entries.has(id) && r.item !== undefined) this.entries.set(id, { ...r, due: now });
    }
    if (this.entries.size > 0) this.o.log.info('documents waiting to be published again', { feed: this.feed, documents: this.entries.size });
    this.loop = this.run(handle);
  }

  private async run(handle: BatchHandler<C>): Promise<void> {
    while (!this.stopped) {
      const now = Date.now();
      let due: [string, Entry<C>] | undefined;
      let next = Math.max(now + IDLE_MS, this.pausedUntil);
      if (now >= this.pausedUntil) {
        for (const [id, e] of this.entries) {
          if (e.due <= now && (due === undefined || e.due < due[1].due)) due = [id, e];
          else if (e.due > now) next = Math.min(next, e.due);
        }
      } else next = this.pausedUntil;
      if (due === undefined) {
        await this.sleep(next - now);
        continue;
      }
      const [id, e] = due;
      e.due = Infinity; // handed over: failed() or succeeded() decides
      this.handing = id;
      this.failedAgain = false;
      this.nudged = false;
      let failure: unknown;
      try {
        await handle({ changes: [e.item] });
      } catch (err) {
        failure = err;
      } finally {
        this.handing = undefined;
      }
      const at = Date.now();
      // Left as it was (the publisher failed as a whole, or decided nothing of it): tried again
      // after its own wait, a failure counting as a failed attempt.
      if (this.entries.get(id) === e && e.due === Infinity) {
        if (failure !== undefined) e.tries++;
        e.due = at + this.wait(e.tries);
      }
      if (failure !== undefined) this.o.log.warn('publishing a document again failed', { feed: this.feed, doc: id, reason: String(failure) });
      // It failed again: the others wait for its next attempt (the cause is likely theirs too) —
      // unless the component came online again meanwhile (an attempt of before that failing).
      if (this.nudged) {
        this.nudged = false;
        const again = this.entries.get(id);
        if (again && again.due !== Infinity) again.due = at;
      } else if (failure !== undefined || this.failedAgain) this.pausedUntil = this.entries.get(id)?.due ?? at + this.firstMs;
    }
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
