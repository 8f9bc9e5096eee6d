// A per-node lock over a shared map (SharedKv: CouchDB), so that the changes several Hermod
// processes make to one node are serialised and each decides on the node's current state:
// two publishes of one item id, two subscribes, create against delete, affiliation changes.
// CouchDB has no multi-document transactions; the lock document `l\0<node>` and its revision
// checks are what orders them.
//
// The document holds {holder, until} while held and {} once released; it is taken by a
// conditional write (SharedKv.putIf) on the revision last seen. Holding the revision this
// process wrote when it released the lock last means nobody changed the node since: its caches
// are still right (`stale` false). Any other outcome (someone else released it meanwhile, or
// it was never seen) makes `stale` true: the caller rereads the node. A lock whose holder died
// is taken over once its `until` has passed (TTL_MS, renewed while held; clocks of the
// machines are assumed to agree within a second or so).

import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { SharedKv } from './kv.ts';

/** How long a taken lock lasts unless renewed, ms. */
export const TTL_MS = 10_000;
/** Renewal period while held, ms. */
const RENEW_MS = 3_000;
const MAX_WAIT_STEP_MS = 50;

interface LockDoc {
  holder?: string;
  until?: number;
}

/** The lock key of a node (kv-store.ts layout). */
export const lockKey = (node: string): string => `l\0${node}`;

export class NodeLocks {
  /** Who this process is in lock documents. */
  readonly holder = randomUUID();
  /** The revision of each node's lock document as this process last wrote it on release. */
  private readonly released = new LRUCache<string, string>({ max: 100_000 });

  constructor(
    private readonly kv: SharedKv,
    private readonly now: () => number = Date.now,
  ) {}

  /** Another process changed the node's lock document: the revision this process knows is old. */
  changedElsewhere(node: string): void {
    this.released.delete(node);
  }

  /**
   * Runs `work` holding the node's lock, waiting while another process holds it (polling, up
   * to 50 ms apart). `work(stale)`: stale is true when the node may have changed since this
   * process last held the lock. Releases the lock whether `work` resolves or rejects (a node
   * `work` deleted leaves no lock document). Rejects with what `work` or the store rejects with.
   */
  async run<T>(node: string, work: (stale: boolean) => Promise<T>, deleted: () => boolean = () => false): Promise<T> {
    const { version, stale } = await this.acquire(node);
    let current = version;
    let renewing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      renewing = renewing.then(async () => {
        const next = await this.kv.putIf(lockKey(node), this.held(), current).catch(() => undefined);
        if (next !== undefined) current = next;
      });
    }, RENEW_MS);
    try {
      return await work(stale);
    } finally {
      clearInterval(timer);
      await renewing;
      const gone = deleted();
      // A release that fails (store down) leaves the lock to expire: nobody waits longer than TTL_MS.
      const after = await this.kv.putIf(lockKey(node), gone ? undefined : '{}', current).catch(() => undefined);
      if (after !== undefined && !gone) this.released.set(node, after);
      else this.released.delete(node);
    }
  }

  private held(): string {
    return JSON.stringify({ holder: this.holder, until: this.now() + TTL_MS } satisfies LockDoc);
  }

  /** Takes the lock: first on the revision this process released it at, else on the one read. */
  private async acquire(node: string): Promise<{ version: string; stale: boolean }> {
    const known = this.released.get(node);
    if (known !== undefined) {
      const version = await this.kv.putIf(lockKey(node), this.held(), known);
      if (version !== undefined) return { version, stale: false };
    }
    for (let wait = 2; ; wait = Math.min(MAX_WAIT_STEP_MS, wait * 2)) {
      const { value, version } = await this.kv.versioned(lockKey(node));
      const doc = value === undefined ? {} : (JSON.parse(value) as LockDoc);
      if (doc.holder === undefined || (doc.until ?? 0) < this.now()) {
        const taken = await this.kv.putIf(lockKey(node), this.held(), version);
        if (taken !== undefined) return { version: taken, stale: true };
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
