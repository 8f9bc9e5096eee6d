// Durable quarantine for leaves whose transformation (or the sink after it) failed: nothing is
// lost. One JSON file per leaf under dataDir/quarantine, written atomically (temp + rename), so
// the `hermod quarantine` command can list, show and drop entries while Hermod runs. `retry`
// moves an entry to quarantine/retry/, which the running Hermod picks up and processes again.

import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface QuarantineEntry {
  id: string;
  /** ms since epoch. */
  at: number;
  /** The partner service and node the leaf came from. */
  service: string;
  node: string;
  itemId: string;
  /** The item's payload as received (serialized XML). */
  payload: string;
  stylesheet?: string;
  reason: string;
  attempts: number;
}

const ID = /^[0-9a-f-]{36}$/;

export class Quarantine {
  readonly dir: string;
  readonly retryDir: string;

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, 'quarantine');
    this.retryDir = path.join(this.dir, 'retry');
  }

  private file(id: string, retry = false): string {
    if (!ID.test(id)) throw new Error(`not a quarantine id: ${id}`);
    return path.join(retry ? this.retryDir : this.dir, `${id}.json`);
  }

  async add(entry: Omit<QuarantineEntry, 'id' | 'at' | 'attempts'> & { attempts?: number }): Promise<QuarantineEntry> {
    await mkdir(this.retryDir, { recursive: true });
    const full: QuarantineEntry = { id: randomUUID(), at: Date.now(), attempts: entry.attempts ?? 1, ...entry };
    const tmp = path.join(this.dir, `.${full.id}.tmp`);
    await writeFile(tmp, JSON.stringify(full, null, 2));
    await rename(tmp, this.file(full.id));
    return full;
  }

  private async read(dir: string): Promise<QuarantineEntry[]> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return [];
    }
    const out: QuarantineEntry[] = [];
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      try {
        out.push(JSON.parse(await readFile(path.join(dir, name), 'utf8')) as QuarantineEntry);
      } catch {
        /* being written or removed */
      }
    }
    return out.sort((a, b) => a.at - b.at);
  }

  list(): Promise<QuarantineEntry[]> {
    return this.read(this.dir);
  }

  async get(id: string): Promise<QuarantineEntry | undefined> {
    try {
      return JSON.parse(await readFile(this.file(id), 'utf8')) as QuarantineEntry;
    } catch {
      try {
        return JSON.parse(await readFile(this.file(id, true), 'utf8')) as QuarantineEntry;
      } catch {
        return undefined;
      }
    }
  }

  /** Marks an entry for another attempt by the running Hermod. */
  async retry(id: string): Promise<boolean> {
    await mkdir(this.retryDir, { recursive: true });
    try {
      await rename(this.file(id), this.file(id, true));
      return true;
    } catch {
      return false;
    }
  }

  async drop(id: string): Promise<boolean> {
    const existed = (await this.get(id)) !== undefined;
    await rm(this.file(id), { force: true });
    await rm(this.file(id, true), { force: true });
    return existed;
  }

  /** Entries waiting for a retry (taken out of the retry folder by the caller via `done`). */
  pendingRetries(): Promise<QuarantineEntry[]> {
    return this.read(this.retryDir);
  }

  async done(id: string): Promise<void> {
    await rm(this.file(id, true), { force: true });
  }
}
