// Source: a CouchDB database's _changes feed, read with longpoll requests one batch at a time:
// each batch is fully handled before the next is asked for, and the next is asked for at once.
// (nano's changesReader in `wait` mode polls every 100 ms for its resume and so added up to
// 100 ms per batch: most of a single edit's replication latency.) The checkpoint (opaque seq) is
// stored only after the handler has finished with a batch, so a crash or restart resumes there:
// nothing is lost, and what was acknowledged is not handed over again. A Source (source.ts):
// each batch carries the feed's last_seq as its checkpoint; a batch whose handler rejects is
// handed over again (backoff 0.5 s doubling to 30 s) until it is handled or the source stops.

import type { DocumentScope } from 'nano';
import type { Logger } from '../log.ts';
import type { BatchHandler, Checkpoint, Source } from './source.ts';

export interface Change {
  id: string;
  deleted: boolean;
  seq: unknown;
}

export interface ChangesSourceOptions {
  db: DocumentScope<unknown>;
  /** Name under which the checkpoint is stored. */
  feed: string;
  log: Logger;
  batchSize?: number;
}

interface ChangesPage {
  results?: Array<{ id: string; deleted?: boolean; seq: unknown }>;
  last_seq?: Checkpoint;
}

export class CouchChangesSource implements Source<Change> {
  readonly feed: string;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;

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

  /** Follows the feed from `since` (undefined: from the beginning); the handler must log and skip a bad document, not reject. */
  async start(from: Checkpoint | undefined, handle: BatchHandler<Change>): Promise<void> {
    const { db, log, feed } = this.options;
    let since: Checkpoint = from ?? '0';
    log.info('following changes', { feed, since });
    this.loop = (async () => {
      let backoff = 0;
      while (!this.stopped) {
        let page: ChangesPage;
        try {
          this.abort = new AbortController();
          page = (await db.server.relax({
            db: db.config.db,
            path: '_changes',
            method: 'GET',
            qs: { feed: 'longpoll', since, limit: this.options.batchSize ?? 200, timeout: 25_000, style: 'all_docs' },
            signal: this.abort.signal,
          } as never)) as ChangesPage;
          backoff = 0;
        } catch (err) {
          if (this.stopped) break;
          backoff = Math.min(backoff ? backoff * 2 : 1000, 60_000);
          const e = err as Error & { statusCode?: number };
          log.warn('changes feed interrupted; retrying with backoff', { feed, reason: e.message, status: e.statusCode, retryInMs: backoff });
          await this.sleep(backoff);
          continue;
        }
        const results = page.results ?? [];
        if (results.length > 0) {
          const changes = results.map((r) => ({ id: r.id, deleted: r.deleted === true, seq: r.seq }));
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
    await this.loop;
  }
}
