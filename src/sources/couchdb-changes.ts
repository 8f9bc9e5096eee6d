// Source: a CouchDB database's _changes feed through nano's changes reader, in `wait` mode so
// that each batch is fully handled before the next is read. The checkpoint (opaque seq) is
// stored only after the handler has finished with a batch, so a crash or restart resumes
// there: nothing is lost, and what was acknowledged is not handed over again.

import type { DocumentScope } from 'nano';
import type { Logger } from '../log.ts';

export interface Change {
  id: string;
  deleted: boolean;
  seq: unknown;
}

export interface ChangesSourceOptions {
  db: DocumentScope<unknown>;
  /** Name under which the checkpoint is stored. */
  feed: string;
  getCheckpoint(): Promise<string | undefined>;
  setCheckpoint(seq: unknown): Promise<void>;
  /** Handles one batch; must not throw for a bad document (log and skip it instead). */
  handle(changes: Change[]): Promise<void>;
  log: Logger;
  batchSize?: number;
}

export class CouchChangesSource {
  private stopped = false;
  private busy: Promise<void> = Promise.resolve();

  constructor(private readonly options: ChangesSourceOptions) {}

  async start(): Promise<void> {
    const { db, log } = this.options;
    const since = (await this.options.getCheckpoint()) ?? '0';
    const reader = db.changesReader;
    let latest: unknown = since;
    reader
      .start({ since, includeDocs: false, wait: true, batchSize: this.options.batchSize ?? 200, timeout: 25_000, qs: { style: 'all_docs' } })
      .on('seq', (seq: unknown) => {
        latest = seq;
      })
      .on('batch', (results: Array<{ id: string; deleted?: boolean; seq: unknown }>) => {
        const seq = latest;
        this.busy = (async () => {
          const changes = results.map((r) => ({ id: r.id, deleted: r.deleted === true, seq: r.seq }));
          // Retry the same batch until it is handled: nano has already moved past it.
          for (let delay = 500; !this.stopped; delay = Math.min(delay * 2, 30_000)) {
            try {
              await this.options.handle(changes);
              await this.options.setCheckpoint(seq);
              break;
            } catch (err) {
              log.error('change batch failed; retrying', { feed: this.options.feed, reason: String(err), retryInMs: delay });
              await new Promise((r) => setTimeout(r, delay));
            }
          }
          if (!this.stopped) reader.resume();
        })();
      })
      .on('error', (err: Error & { statusCode?: number }) => {
        if (!this.stopped) log.warn('changes feed interrupted; retrying with backoff', { feed: this.options.feed, reason: err.message, status: err.statusCode });
      });
    log.info('following changes', { feed: this.options.feed, since });
  }

  /** Stops reading and waits for the batch under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.options.db.changesReader.stop();
    await this.busy;
  }
}
