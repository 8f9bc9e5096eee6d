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
//
// A released lock also carries the node state's token `g`: a fresh random one whenever the
// holder changed the node's record, affiliations or subscriptions (touch()), else the one it
// found. A process taking the lock from another finds its own last token there when nobody
// changed that state since it released the lock: only the items may have moved (`stale`), its
// cached record, affiliations and subscriptions are still right (`stateStale` false), and a
// publication handed back and forth between processes does not reread every subscription.

import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { SharedKv } from './kv.ts';

/** How long a taken lock lasts unless renewed, ms. */
export const TTL_MS = 10_000;
/** Renewal period while held, ms. */
const RENEW_MS = 3_000;
/** Longest pause between two looks at a lock another process holds, ms (its release on the changes feed wakes the waiter sooner). */
const MAX_WAIT_STEP_MS = 100;

/** Longest time a lock passes from run to run in this process before others get a turn, ms. */
const LINGER_MAX_MS = 200;
/** How long a process that gave a lock up waits before taking it again, ms (a waiting process is woken by the feed). */
const YIELD_MS = 10;

interface Holding {
  version: string;
  /** When it was taken (ms). */
  since: number;
  /** The node state's token it was taken with (undefined: unknown, a fresh one is written). */
  gen: string | undefined;
  /** The holder changed the node's record, affiliations or subscriptions (touch()). */
  touched: boolean;
  renewer: NodeJS.Timeout;
  renewing: Promise<void>;
  /** The release planned once this turn of the event loop ends. */
  release?: NodeJS.Immediate;
}

interface LockDoc {
  holder?: string;
  until?: number;
  /** On a released lock: the node state's token (see above). */
  g?: string;
}

/** The lock key of a node (kv-store.ts layout). */
export const lockKey = (node: string): string => `l\0${node}`;

export class NodeLocks {
  /** Who this process is in lock documents. */
  readonly holder = randomUUID();
  /** The revision of each node's lock document as this process last wrote it on release. */
  private readonly released = new LRUCache<string, string>({ max: 100_000 });
  /** The node state's token this process last released each node's lock with. */
  private readonly tokens = new LRUCache<string, string>({ max: 100_000 });
  /** Locks held now (also between two runs that follow each other at once). */
  private readonly holding = new Map<string, Holding>();
  /** Releases under way. */
  private readonly releasing = new Map<string, Promise<void>>();
  /** Nodes whose lock was given up after LINGER_MAX_MS: the next run pauses first. */
  private readonly yielded = new Set<string>();
  /** Who waits for a node's lock held elsewhere: woken when its document changes. */
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(
    private readonly kv: SharedKv,
    private readonly now: () => number = Date.now,
  ) {}

  /** Another process changed the node's lock document: the revision this process knows is old. */
  changedElsewhere(node: string): void {
    this.released.delete(node);
    for (const wake of this.waiters.get(node) ?? []) wake();
  }

  /** Resolves after `ms`, or sooner when the node's lock document changes elsewhere. */
  private pause(node: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiting = this.waiters.get(node);
      if (!waiting) this.waiters.set(node, (waiting = new Set()));
      const set = waiting;
      const done = (): void => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(node) === set) this.waiters.delete(node);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
  }

  /**
   * Runs `work` holding the node's lock, waiting while another process holds it (woken by the
   * changes feed, else looking again up to 100 ms apart). `work(stale, stateStale)`: stale is
   * true when the node may have changed since this process last held the lock; stateStale when
   * its record, affiliations or subscriptions may have (only with stale). The lock is released once
   * `work` settles, unless another run for the node follows at once in this process (it then
   * passes on, up to LINGER_MAX_MS in a row; then it is released and other processes get
   * their turn). A node `work` deleted (`deleted()` true) leaves no lock document. Runs for one
   * node must not overlap in this process (the caller serialises them). Rejects with what
   * `work` or the store rejects with.
   */
  async run<T>(node: string, work: (stale: boolean, stateStale: boolean) => Promise<T>, deleted: () => boolean = () => false): Promise<T> {
    await this.releasing.get(node);
    let hold = this.holding.get(node);
    let stale = false;
    let stateStale = false;
    if (hold) {
      if (hold.release) clearImmediate(hold.release);
      hold.release = undefined;
    } else {
      const taken = await this.acquire(node);
      stale = taken.stale;
      stateStale = taken.stale && (taken.gen === undefined || taken.gen !== this.tokens.get(node));
      const fresh: Holding = {
        version: taken.version,
        since: this.now(),
        gen: taken.gen,
        touched: false,
        renewing: Promise.resolve(),
        renewer: setInterval(() => this.renew(node, fresh), RENEW_MS),
      };
      hold = fresh;
      this.holding.set(node, hold);
    }
    try {
      return await work(stale, stateStale);
    } finally {
      const gone = deleted();
      if (gone || this.now() - hold.since >= LINGER_MAX_MS) await this.release(node, gone, !gone);
      else hold.release = setImmediate(() => void this.release(node, false, false));
    }
  }

  /** The holder changed the node's record, affiliations or subscriptions: its release hands on a fresh token. */
  touch(node: string): void {
    const hold = this.holding.get(node);
    if (hold) hold.touched = true;
  }

  /** Releases every lock this process holds (on close). */
  async close(): Promise<void> {
    await Promise.all([...this.holding.keys()].map((node) => this.release(node, false, false)));
    await Promise.all([...this.releasing.values()]);
  }

  private renew(node: string, hold: Holding): void {
    hold.renewing = hold.renewing.then(async () => {
      const next = await this.kv.putIf(lockKey(node), this.held(), hold.version).catch(() => undefined);
      if (next !== undefined) hold.version = next;
    });
  }

  /** Gives the lock back ({} or, for a deleted node, no document); `yielding`: the next local run lets others in first. */
  private release(node: string, gone: boolean, yielding: boolean): Promise<void> {
    const hold = this.holding.get(node);
    if (!hold) return this.releasing.get(node) ?? Promise.resolve();
    this.holding.delete(node);
    clearInterval(hold.renewer);
    if (hold.release) clearImmediate(hold.release);
    if (yielding) this.yielded.add(node);
    const done = (async () => {
      await hold.renewing;
      // A release that fails (store down) leaves the lock to expire: nobody waits longer than TTL_MS.
      const g = hold.touched || hold.gen === undefined ? randomUUID() : hold.gen;
      const after = await this.kv.putIf(lockKey(node), gone ? undefined : JSON.stringify({ g } satisfies LockDoc), hold.version).catch(() => undefined);
      if (after !== undefined && !gone) {
        this.released.set(node, after);
        this.tokens.set(node, g);
      } else {
        this.released.delete(node);
        this.tokens.delete(node);
      }
    })().finally(() => {
      if (this.releasing.get(node) === done) this.releasing.delete(node);
    });
    this.releasing.set(node, done);
    return done;
  }

  private held(): string {
    return JSON.stringify({ holder: this.holder, until: this.now() + TTL_MS } satisfies LockDoc);
  }

  /**
   * Takes the lock: first on the revision this process released it at, else on the one read.
   * `gen`: the node state's token it was released with (undefined: no document, a holder that
   * died, or an older Hermod's release).
   */
  private async acquire(node: string): Promise<{ version: string; stale: boolean; gen: string | undefined }> {
    if (this.yielded.delete(node)) await this.pause(node, YIELD_MS);
    const known = this.released.get(node);
    if (known !== undefined) {
      const version = await this.kv.putIf(lockKey(node), this.held(), known);
      if (version !== undefined) return { version, stale: false, gen: this.tokens.get(node) };
    }
    for (let wait = 2; ; wait = Math.min(MAX_WAIT_STEP_MS, wait * 2)) {
      const { value, version } = await this.kv.versioned(lockKey(node));
      const doc = value === undefined ? {} : (JSON.parse(value) as LockDoc);
      if (doc.holder === undefined || (doc.until ?? 0) < this.now()) {
        const taken = await this.kv.putIf(lockKey(node), this.held(), version);
        if (taken !== undefined) return { version: taken, stale: true, gen: doc.holder === undefined ? doc.g : undefined };
      }
      await this.pause(node, wait);
    }
  }
}
