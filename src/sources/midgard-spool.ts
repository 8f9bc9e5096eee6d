// Source: a spool directory where a Midgard-side watcher drops serialized objects, one file each
// (the seed's proof of concept before D-Bus). Files are handed over in order (modification time,
// then name) in batches of up to `batchMax` files and `batchBytes` bytes; a file is moved to
// done/ only after its work is finished, or to failed/ with a `<name>.reason` file when its
// content is invalid. The handler says which files of a batch failed by rejecting with a
// SpoolBatchError (any other rejection: the whole batch failed; a batch of several files is then
// handed over again one file at a time, to tell which). A failure that is not the file's fault
// (e.g. the store) leaves it and the files after it in place, to be retried in order. A crash
// between the work and the move hands the files over again: the handler must be idempotent.
// A file that keeps failing that way is tried again after waits doubling from `retryFirstMs` to
// `retryMaxMs` (polls and new files do not shorten the wait: a busy spool would retry it at
// the rate files arrive), each failure logged with the next wait.
// Names starting with "." or ending in ".tmp" are ignored (writers can rename into place).
// A Source (source.ts) with no checkpoint: done/ is its position.

import { watch, type FSWatcher } from 'node:fs';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.ts';
import type { BatchHandler, Source } from './source.ts';

/** One spool file: its content and its name in the spool directory. */
export interface SpoolFile {
  text: string;
  file: string;
}

/** A handler's rejection naming the files of the batch that failed (by index in the batch) and why; the others are done. */
export class SpoolBatchError extends Error {
  constructor(readonly errors: ReadonlyMap<number, unknown>) {
    super(`${errors.size} spool file(s) of the batch failed`);
    this.name = 'SpoolBatchError';
  }
}

/** Default bounds of one batch: files, and bytes of their content. */
export const SPOOL_BATCH_MAX = 64;
export const SPOOL_BATCH_BYTES = 8 * 1024 * 1024;
/** Default waits before a file that failed, not for its content, is tried again: first and longest (ms). */
export const SPOOL_RETRY_FIRST_MS = 1000;
export const SPOOL_RETRY_MAX_MS = 60_000;

export interface MidgardSpoolSourceOptions {
  dir: string;
  /** Most files per batch (default SPOOL_BATCH_MAX). */
  batchMax?: number;
  /** Most bytes per batch (default SPOOL_BATCH_BYTES); a larger file goes alone. */
  batchBytes?: number;
  /** Whether an error means the file is bad (moved to failed/) rather than a transient failure. */
  isPermanent(err: unknown): boolean;
  log: Logger;
  pollMs?: number;
  /** Wait before a transient failure is tried again, doubling per failure (default SPOOL_RETRY_FIRST_MS). */
  retryFirstMs?: number;
  /** Longest such wait (default SPOOL_RETRY_MAX_MS). */
  retryMaxMs?: number;
}

export class MidgardSpoolSource implements Source<SpoolFile> {
  readonly feed: string;
  private handle: BatchHandler<SpoolFile> = async () => {};
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Transient failures in a row of the file at the head of the spool, and when it may be tried again (epoch ms). */
  private failures = 0;
  private retryAt = 0;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: MidgardSpoolSourceOptions) {
    this.feed = `spool:${o.dir}`;
  }

  /** Watches the directory (and polls it); `since` is not used: what is still in the spool is what is left to do. */
  async start(_since: unknown, handle: BatchHandler<SpoolFile>): Promise<void> {
    this.handle = handle;
    await mkdir(path.join(this.o.dir, 'done'), { recursive: true });
    await mkdir(path.join(this.o.dir, 'failed'), { recursive: true });
    this.watcher = watch(this.o.dir, () => this.scanSoon());
    this.watcher.on('error', (err) => this.o.log.warn('spool watcher failed; polling only', { dir: this.o.dir, reason: err.message }));
    this.timer = setInterval(() => this.scanSoon(), this.o.pollMs ?? 1000);
    this.o.log.info('watching Midgard spool', { dir: this.o.dir });
    this.scanSoon();
  }

  /** Resolves when the directory has been processed up to now (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private scanSoon(): void {
    if (this.stopped) return;
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      this.retryTimer ??= setTimeout(() => {
        this.retryTimer = undefined;
        this.scanSoon();
      }, wait);
      return;
    }
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.scan();
      } while (this.again && !this.stopped && this.retryAt <= Date.now());
    })()
      .catch((err: unknown) => {
        const retryInMs = this.backOff();
        this.o.log.error('spool scan failed; will retry', { dir: this.o.dir, reason: String(err), failures: this.failures, retryInMs });
      })
      .finally(() => {
        this.running = undefined;
      });
  }

  /** Counts a transient failure and sets when the spool is scanned again; returns that wait (ms). */
  private backOff(): number {
    this.failures++;
    const first = this.o.retryFirstMs ?? SPOOL_RETRY_FIRST_MS;
    const retryInMs = Math.min(first * 2 ** Math.min(this.failures - 1, 30), this.o.retryMaxMs ?? SPOOL_RETRY_MAX_MS);
    this.retryAt = Date.now() + retryInMs;
    return retryInMs;
  }

  private async pending(): Promise<string[]> {
    const entries = await readdir(this.o.dir, { withFileTypes: true });
    const files = entries.filter((e) => e.isFile() && !e.name.startsWith('.') && !e.name.endsWith('.tmp')).map((e) => e.name);
    const withTime = await Promise.all(files.map(async (name) => ({ name, mtime: (await stat(path.join(this.o.dir, name)).catch(() => undefined))?.mtimeMs })));
    return withTime
      .filter((f) => f.mtime !== undefined)
      .sort((a, b) => (a.mtime as number) - (b.mtime as number) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((f) => f.name);
  }

  private async scan(): Promise<void> {
    const { dir, log } = this.o;
    const names = await this.pending();
    let max = this.o.batchMax ?? SPOOL_BATCH_MAX;
    for (let at = 0; at < names.length && !this.stopped; ) {
      const batch: SpoolFile[] = [];
      let bytes = 0;
      while (at + batch.length < names.length && batch.length < max) {
        const name = names[at + batch.length] as string;
        const text = await readFile(path.join(dir, name), 'utf8');
        if (batch.length > 0 && bytes + text.length > (this.o.batchBytes ?? SPOOL_BATCH_BYTES)) break;
        batch.push({ text, file: name });
        bytes += text.length;
      }
      let errors: ReadonlyMap<number, unknown> = new Map();
      try {
        await this.handle({ changes: batch });
      } catch (err) {
        if (!(err instanceof SpoolBatchError) && batch.length > 1) {
          log.warn('spool batch failed; handing its files over one at a time', { files: batch.length, reason: err instanceof Error ? err.message : String(err) });
          max = 1;
          continue;
        }
        errors = err instanceof SpoolBatchError ? err.errors : new Map([[0, err]]);
      }
      for (const [i, { file: name }] of batch.entries()) {
        const file = path.join(dir, name);
        if (this.failures > 0 && (!errors.has(i) || this.o.isPermanent(errors.get(i)))) {
          log.info('spool file no longer failing', { file: name, failures: this.failures });
          this.failures = 0;
          this.retryAt = 0;
        }
        if (!errors.has(i)) {
          await rename(file, path.join(dir, 'done', name));
          log.debug('spool file done', { file: name });
          continue;
        }
        const err = errors.get(i);
        const reason = err instanceof Error ? err.message : String(err);
        if (!this.o.isPermanent(err)) {
          const retryInMs = this.backOff();
          log.error('spool file failed; will retry', { file: name, reason, failures: this.failures, retryInMs });
          return; // keep the order: nothing after it goes first (handed over again with it)
        }
        await writeFile(path.join(dir, 'failed', `${name}.reason`), `${reason}\n`);
        await rename(file, path.join(dir, 'failed', name));
        log.warn('spool file moved to failed/', { file: name, reason });
      }
      at += batch.length;
    }
    if (!this.stopped) {
      this.failures = 0; // the whole spool went through: a failed scan of an empty one ends here
      this.retryAt = 0;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    await this.idle();
  }
}
