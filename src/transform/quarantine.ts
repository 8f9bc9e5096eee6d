// Durable quarantine for leaves whose transformation (or the sink after it) failed: nothing is
// lost. Kept in the store's state space 'quarantine' (so that every Hermod sharing a store sees
// it, and `hermod migrate` moves it):
//   q\0<id>   an entry (JSON) in the quarantine
//   r\0<id>   an entry marked for another attempt (`hermod quarantine retry`): the Hermod running
//             the replication takes it up at its next check
// Moving an entry is one batch (delete and put). `hermod quarantine` reaches the running Hermod
// through its status socket, or, with none running, opens the store itself (quarantineRequest).
// An older Hermod's dataDir/quarantine folder (one JSON file per entry, retry/ for the marked
// ones) is imported once and renamed quarantine.imported.

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.ts';
import type { StateOp, StateSpace } from '../store/store.ts';

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

export const QUARANTINE_SPACE = 'quarantine';
const ID = /^[0-9a-f-]{36}$/;
const QUARANTINED = 'q\0';
const RETRY = 'r\0';

export class Quarantine {
  private ready: Promise<void> | undefined;
  /** Ids with an entry (either kind): a delivered leaf not among them costs no write. */
  private readonly known = new Set<string>();

  constructor(
    private readonly space: StateSpace,
    private readonly options: { legacyDir?: string; log?: Pick<Logger, 'info' | 'warn'> } = {},
  ) {}

  private key(id: string, retry = false): string {
    if (!ID.test(id)) throw new Error(`not a quarantine id: ${id}`);
    return (retry ? RETRY : QUARANTINED) + id;
  }

  /** Imports an older Hermod's folder (once) and learns the ids; every method waits for it. */
  private load(): Promise<void> {
    this.ready ??= (async () => {
      const dir = this.options.legacyDir && path.join(this.options.legacyDir, 'quarantine');
      if (dir && existsSync(dir)) {
        const ops: StateOp[] = [];
        for (const [sub, retry] of [[dir, false], [path.join(dir, 'retry'), true]] as const) {
          for (const name of (await readdir(sub).catch(() => [] as string[])).filter((n) => n.endsWith('.json'))) {
            const text = await readFile(path.join(sub, name), 'utf8').catch(() => undefined);
            const entry = text === undefined ? undefined : (JSON.parse(text) as QuarantineEntry);
            if (entry && ID.test(entry.id)) ops.push({ type: 'put', key: this.key(entry.id, retry), value: JSON.stringify(entry) });
          }
        }
        await this.space.batch(ops);
        await rename(dir, `${dir}.imported`);
        this.options.log?.info('quarantine of an older Hermod imported into the store (once)', { from: dir, entries: ops.length });
      }
      for await (const [key] of this.space.range('')) this.known.add(key.slice(2));
    })();
    return this.ready;
  }

  /**
   * The entry id of a leaf: one per item of a node, so a leaf delivered twice (notification and
   * catch-up) is one entry, and a newer version of the item replaces the one quarantined before.
   * A leaf written without a stylesheet is the same document whichever node carried it: its id
   * leaves the node out (`node` undefined), so that one entry stands for the document.
   */
  static idOf(entry: Pick<QuarantineEntry, 'adapter' | 'service' | 'itemId'> & { node: string | undefined }): string {
    const h = createHash('sha256').update(JSON.stringify([entry.adapter ?? '', entry.service, ...(entry.node === undefined ? [] : [entry.node]), entry.itemId])).digest('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  }

  /** Quarantines a leaf under `id` (replacing an earlier version of the same item, attempts counted on). */
  async add(entry: Omit<QuarantineEntry, 'id' | 'at' | 'attempts'>, id = Quarantine.idOf(entry)): Promise<QuarantineEntry> {
    const before = await this.get(id);
    const full: QuarantineEntry = { ...entry, id, at: Date.now(), attempts: (before?.attempts ?? 0) + 1 };
    await this.save(full);
    return full;
  }

  /** Writes the entry into the quarantine, taking away a retry mark, in one batch. */
  private async save(entry: QuarantineEntry): Promise<void> {
    await this.load();
    await this.space.batch([
      { type: 'put', key: this.key(entry.id), value: JSON.stringify(entry) },
      { type: 'del', key: this.key(entry.id, true) },
    ]);
    this.known.add(entry.id);
  }

  /** A retried entry failed again: back in the quarantine with the new reason, one more attempt counted. */
  async requeue(entry: QuarantineEntry, reason: string): Promise<void> {
    await this.save({ ...entry, reason, attempts: entry.attempts + 1 });
  }

  private async read(prefix: string): Promise<QuarantineEntry[]> {
    await this.load();
    const out: QuarantineEntry[] = [];
    for await (const [, value] of this.space.range(prefix)) out.push(JSON.parse(value) as QuarantineEntry);
    return out.sort((a, b) => a.at - b.at);
  }

  /** The entries in the quarantine (not those marked for retry), oldest first. */
  list(): Promise<QuarantineEntry[]> {
    return this.read(QUARANTINED);
  }

  /** The entry, quarantined or marked for retry. */
  async get(id: string): Promise<QuarantineEntry | undefined> {
    await this.load();
    const [held, retrying] = await this.space.getMany([this.key(id), this.key(id, true)]);
    const text = held ?? retrying;
    return text === undefined ? undefined : (JSON.parse(text) as QuarantineEntry);
  }

  /** The entry if it is marked for another attempt (and not quarantined again since). */
  async marked(id: string): Promise<QuarantineEntry | undefined> {
    await this.load();
    const text = await this.space.get(this.key(id, true));
    return text === undefined ? undefined : (JSON.parse(text) as QuarantineEntry);
  }

  /** Marks an entry for another attempt by the running Hermod; false when there is none. */
  async retry(id: string): Promise<boolean> {
    await this.load();
    const held = await this.space.get(this.key(id));
    if (held === undefined) return false;
    await this.space.batch([
      { type: 'put', key: this.key(id, true), value: held },
      { type: 'del', key: this.key(id) },
    ]);
    return true;
  }

  /** Removes an entry; false when there was none. */
  async drop(id: string): Promise<boolean> {
    const existed = (await this.get(id)) !== undefined;
    await this.remove(id);
    return existed;
  }

  /**
   * Removes an entry if there is one (no store write for ids never quarantined: cheap for every
   * delivered leaf). `id` may be a function: then it is computed only when the quarantine holds
   * anything (idOf hashes; this runs for every delivered leaf).
   */
  async discard(id: string | (() => string)): Promise<void> {
    await this.load();
    if (this.known.size === 0) return;
    const key = typeof id === 'string' ? id : id();
    if (this.known.has(key)) await this.remove(key);
  }

  /**
   * The entry (quarantined or marked for retry) if there is one, like `get`, but without a store
   * read while the quarantine holds nothing in this process's view (as `discard`); `id` may be a
   * function, computed only then.
   */
  async find(id: string | (() => string)): Promise<QuarantineEntry | undefined> {
    await this.load();
    if (this.known.size === 0) return undefined;
    const key = typeof id === 'string' ? id : id();
    return this.known.has(key) ? this.get(key) : undefined;
  }

  private async remove(id: string): Promise<void> {
    await this.space.batch([
      { type: 'del', key: this.key(id) },
      { type: 'del', key: this.key(id, true) },
    ]);
    this.known.delete(id);
  }

  /** Entries waiting for a retry (taken out via `done` by the caller). */
  pendingRetries(): Promise<QuarantineEntry[]> {
    return this.read(RETRY);
  }

  /** A retried entry was delivered. */
  async done(id: string): Promise<void> {
    await this.load();
    await this.space.batch([{ type: 'del', key: this.key(id, true) }]);
    if ((await this.space.get(this.key(id))) === undefined) this.known.delete(id);
  }
}

/** What `hermod quarantine` asks (of the running Hermod over its status socket, or of the store). */
export interface QuarantineRequest {
  action: 'list' | 'show' | 'retry' | 'drop';
  /** An entry id, or 'all' (retry, drop). */
  id?: string;
}

export interface QuarantineResponse {
  entries?: QuarantineEntry[];
  retrying?: string[];
  entry?: QuarantineEntry;
  /** Per id of a retry or drop: whether there was such an entry. */
  results?: Array<{ id: string; ok: boolean }>;
}

/** Runs a `hermod quarantine` request on `q`. Throws Error for an id that is not a quarantine id. */
export async function quarantineRequest(q: Quarantine, request: QuarantineRequest): Promise<QuarantineResponse> {
  switch (request.action) {
    case 'list':
      return { entries: await q.list(), retrying: (await q.pendingRetries()).map((e) => e.id) };
    case 'show': {
      const entry = await q.get(request.id ?? '');
      return entry ? { entry } : {};
    }
    case 'retry':
    case 'drop': {
      const ids = request.id === 'all' ? (await q.list()).map((e) => e.id) : [request.id ?? ''];
      const results: Array<{ id: string; ok: boolean }> = [];
      for (const id of ids) results.push({ id, ok: request.action === 'retry' ? await q.retry(id) : await q.drop(id) });
      return { results };
    }
  }
}
