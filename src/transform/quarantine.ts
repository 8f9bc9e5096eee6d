// Durable quarantine for leaves whose transformation (or the sink after it) failed: nothing is
// lost. One JSON file per leaf under dataDir/quarantine, written atomically (temp + rename), so
// the `hermod quarantine` command can list, show and drop entries while Hermod runs. `retry`
// moves an entry to quarantine/retry/, which the running Hermod picks up and processes again.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface QuarantineEntry {
  id: string;
  /** ms since epoch. */
  at: number;
  /** Which replication received the leaf ('ajatus', 'midgard'); absent in entries of older versions. */
  adapter?: string;
  /** The partner (contact JID) whose service sent it. */
  partner?: string;
  /** The partner service and node the leaf came from. */
  service: string;
  node: string;
  itemId: string;
  /** The item's publisher attribute, if it had one. */
  publisher?: string;
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

  /**
   * The entry id of a leaf: one per item of a node, so a leaf delivered twice (notification and
   * catch-up) is one entry, and a newer version of the item replaces the one quarantined before.
   */
  static idOf(entry: Pick<QuarantineEntry, 'adapter' | 'service' | 'node' | 'itemId'>): string {
    const h = createHash('sha256').update(JSON.stringify([entry.adapter ?? '', entry.service, entry.node, entry.itemId])).digest('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  }

  /** Quarantines a leaf (replacing an earlier version of the same item, attempts counted on). */
  async add(entry: Omit<QuarantineEntry, 'id' | 'at' | 'attempts'>): Promise<QuarantineEntry> {
    const id = Quarantine.idOf(entry);
    const before = await this.get(id);
    const full: QuarantineEntry = { ...entry, id, at: Date.now(), attempts: (before?.attempts ?? 0) + 1 };
    await this.save(full);
    await rm(this.file(id, true), { force: true });
    return full;
  }

  private async save(entry: QuarantineEntry): Promise<void> {
    await mkdir(this.retryDir, { recursive: true });
    const tmp = path.join(this.dir, `.${entry.id}.tmp`);
    await writeFile(tmp, JSON.stringify(entry, null, 2));
    await rename(tmp, this.file(entry.id));
  }

  /** A retried entry failed again: back in the quarantine with the new reason, one more attempt counted. */
  async requeue(entry: QuarantineEntry, reason: string): Promise<void> {
    await this.save({ ...entry, reason, attempts: entry.attempts + 1 });
    await rm(this.file(entry.id, true), { force: true });
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
    await this.discard(id);
    return existed;
  }

  /** Removes an entry if there is one (no read: cheap enough for every delivered leaf). */
  async discard(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
    await rm(this.file(id, true), { force: true });
  }

  /** Entries waiting for a retry (taken out of the retry folder by the caller via `done`). */
  pendingRetries(): Promise<QuarantineEntry[]> {
    return this.read(this.retryDir);
  }

  async done(id: string): Promise<void> {
    await rm(this.file(id, true), { force: true });
  }
}
