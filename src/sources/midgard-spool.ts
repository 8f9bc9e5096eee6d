// Source: a spool directory where a Midgard-side watcher drops serialized objects, one file each
// (the seed's proof of concept before D-Bus). Files are processed one at a time in order
// (modification time, then name); a file is moved to done/ only after its work is finished, or to
// failed/ with a `<name>.reason` file when its content is invalid. A failure that is not the
// file's fault (e.g. the store) leaves it in place and is retried, keeping the order. A crash
// between the work and the move hands the file over again: the handler must be idempotent.
// Names starting with "." or ending in ".tmp" are ignored (writers can rename into place).
// A Source (source.ts) of one file per batch, with no checkpoint: done/ is its position.

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

export interface MidgardSpoolSourceOptions {
  dir: string;
  /** Whether an error means the file is bad (moved to failed/) rather than a transient failure. */
  isPermanent(err: unknown): boolean;
  log: Logger;
  pollMs?: number;
}

export class MidgardSpoolSource implements Source<SpoolFile> {
  readonly feed: string;
  private handle: BatchHandler<SpoolFile> = async () => {};
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

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
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.scan();
      } while (this.again && !this.stopped);
    })()
      .catch((err: unknown) => this.o.log.error('spool scan failed', { dir: this.o.dir, reason: String(err) }))
      .finally(() => {
        this.running = undefined;
      });
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
    for (const name of await this.pending()) {
      if (this.stopped) return;
      const file = path.join(dir, name);
      const text = await readFile(file, 'utf8');
      try {
        await this.handle({ changes: [{ text, file: name }] });
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        if (!this.o.isPermanent(err)) {
          log.error('spool file failed; will retry', { file: name, reason });
          return; // keep the order: nothing after it goes first
        }
        await writeFile(path.join(dir, 'failed', `${name}.reason`), `${reason}\n`);
        await rename(file, path.join(dir, 'failed', name));
        log.warn('spool file moved to failed/', { file: name, reason });
        continue;
      }
      await rename(file, path.join(dir, 'done', name));
      log.debug('spool file done', { file: name });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    await this.idle();
  }
}
