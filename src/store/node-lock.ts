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
// machines are assumed to agree within CLOCK_SKEW_MS).
//
// Fencing: a holder whose renewal fails must not write on. Each holding knows until when the
// lock is surely its own (`sure`: when the last write of the lock document was sent, plus
// TTL_MS less CLOCK_SKEW_MS, on this process's clock). Every store write under the lock calls
// fence() first: with less than WRITE_MARGIN_MS left it renews the lock then and there (a
// conditional write on the revision held); a renewal that finds another revision (someone took
// the lock after it expired) marks the holding lost, and a lost holding, or one whose time ran
// out because the store did not answer, refuses the write with LockLostError (retryable,
// `wait`/`internal-server-error`, nothing written). So two processes never write one node's
// state at once, provided a write reaches the store within WRITE_MARGIN_MS of being sent.
//
// A released lock also carries the node state's token `g`: a fresh random one whenever the
// holder changed the node's record, affiliations or subscriptions (touch()), else the one it
// found. A process taking the lock from another finds its own last token there when nobody
// changed that state since it released the lock: only the items may have moved (`stale`), its
// cached record, affiliations and subscriptions are still right (`stateStale` false), and a
// publication handed back and forth between processes does not reread every subscription.
//
// Handovers are what several processes pay for this lock: a release and a take (two conditional
// writes), the taker's read of the document and its reread of the node's item bookkeeping. With
// ejabberd spreading one node's publishes over the processes at random, a lock released as soon
// as a process had no run queued for the node moved at about every other publication (and a
// single process released and took it again whenever its queue was empty for a moment). So a
// lock is kept GRACE_MS after a run: a run of this process that comes within that time finds it
// still held and writes nothing, while the other processes' runs for the node gather in their
// queues and take it in one go once it is released (runs per handover grow, handovers shrink).
// Why a short time and not "until another process asks": asking would be one more write per
// handover (a marker the holder learns of from its changes feed), and with publishes spread at
// random over the processes nearly every handover is asked for; the grace costs no write at
// all and delays a waiting process by GRACE_MS at most. LINGER_MAX_MS still bounds how long one
// process keeps a lock that its own runs keep busy. Nothing of the guarantees moves: a kept lock
// is renewed and fenced as during a run (one that is no longer surely this process's is renewed
// before the next run uses it, and taken anew, the node reread, when another process took it),
// writes under it are fenced as before, and runs of one node still run one at a time in order.
//
// Waiting: a process that finds the lock held waits for the changes feed to tell it the document
// changed (a release wakes it at once) and looks again only every MAX_WAIT_STEP_MS else (a feed
// that is down; a holder that died and whose lock must expire); changes seen between its read and
// its wait are not missed (a counter per node).

import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { PubsubError } from '../pubsub/errors.ts';
import type { SharedKv } from './kv.ts';

/** How long a taken lock lasts unless renewed, ms. */
export const TTL_MS = 10_000;
/** Renewal period while held, ms. */
const RENEW_MS = 3_000;
/** How far the clocks of the machines sharing the store may disagree, ms. */
export const CLOCK_SKEW_MS = 1_000;
/** A write under a lock is sent only with at least this long left on it (else the lock is renewed first), ms. */
export const WRITE_MARGIN_MS = 4_000;
/** Longest pause between two looks at a lock another process holds, ms (its release on the changes feed wakes the waiter sooner). */
const MAX_WAIT_STEP_MS = 250;
/** How long a lock is kept after a run, for the next run of this process, before it is released, ms (see above). */
export const GRACE_MS = 100;

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
  /** Until when the lock is surely this process's (ms, this process's clock). */
  sure: number;
  /** Why the lock is no longer this process's (another took it, or it ran out unrenewed). */
  lost?: string;
  renewer: NodeJS.Timeout;
  renewing: Promise<void>;
  /** The release planned GRACE_MS after the last run (cancelled by the next run). */
  release?: NodeJS.Timeout;
}

interface LockDoc {
  holder?: string;
  until?: number;
  /** On a released lock: the node state's token (see above). */
  g?: string;
}

/**
 * A write under a node's lock refused because the lock is no longer surely this process's
 * (another process took it after it expired, or it could not be renewed in time: the store is
 * slow or unreachable). Nothing was written; the request may be retried (RFC 6120 §8.3.3.6,
 * type `wait`).
 */
export class LockLostError extends PubsubError {
  constructor(
    readonly node: string,
    readonly why: string,
  ) {
    super('internal-server-error', `node ${node}: its cluster lock was lost (${why}); nothing was written, try again`);
    this.name = 'LockLostError';
  }
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
  /** Changes of each node's lock document seen on the feed (only for nodes waited for), so that a waiter misses none between its read and its wait. */
  private readonly changes = new Map<string, number>();

  constructor(
    private readonly kv: SharedKv,
    private readonly now: () => number = Date.now,
    /** Told once per holding that is lost (node, why). */
    private readonly onLost: (node: string, why: string) => void = () => {},
  ) {}

  /** Another process changed the node's lock document: the revision this process knows is old. */
  changedElsewhere(node: string): void {
    this.released.delete(node);
    const seen = this.changes.get(node);
    if (seen !== undefined) this.changes.set(node, seen + 1);
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
   * changes feed, else looking again up to MAX_WAIT_STEP_MS apart). `work(stale, stateStale)`: stale is
   * true when the node may have changed since this process last held the lock; stateStale when
   * its record, affiliations or subscriptions may have (only with stale). The lock is released
   * GRACE_MS after `work` settles, unless another run for the node comes in this process before
   * (it then passes on without a store write, up to LINGER_MAX_MS in a row; then it is released
   * and other processes get their turn). A kept lock that another process took meanwhile (it
   * expired unrenewed) is taken anew, stale. A node `work` deleted (`deleted()` true) leaves no
   * lock document. Runs for one node must not overlap in this process (the caller serialises
   * them). Rejects with what `work` or the store rejects with.
   */
  async run<T>(node: string, work: (stale: boolean, stateStale: boolean) => Promise<T>, deleted: () => boolean = () => false): Promise<T> {
    await this.releasing.get(node);
    let hold = this.holding.get(node);
    if (hold?.release) clearTimeout(hold.release);
    if (hold) hold.release = undefined;
    // A lock kept since the last run that is no longer surely this process's for a write (its
    // renewals failed: a stalled process, a store that did not answer) is renewed first; if
    // another process took it meanwhile it is taken anew, on the node reread, not written under.
    if (hold && !hold.lost && hold.sure - this.now() < WRITE_MARGIN_MS) {
      await this.renew(node, hold);
      if (this.holding.get(node) !== hold) hold = undefined; // released meanwhile (close)
    }
    if (hold?.lost) {
      await this.release(node, false, false); // another's now: taken anew below
      hold = undefined;
    }
    let stale = false;
    let stateStale = false;
    if (!hold) {
      const taken = await this.acquire(node);
      stale = taken.stale;
      stateStale = taken.stale && (taken.gen === undefined || taken.gen !== this.tokens.get(node));
      const fresh: Holding = {
        version: taken.version,
        since: this.now(),
        gen: taken.gen,
        touched: false,
        sure: taken.sent + TTL_MS - CLOCK_SKEW_MS,
        renewing: Promise.resolve(),
        renewer: setInterval(() => void this.renew(node, fresh), RENEW_MS),
      };
      hold = fresh;
      this.holding.set(node, hold);
    }
    try {
      return await work(stale, stateStale);
    } finally {
      const gone = deleted();
      if (gone || this.now() - hold.since >= LINGER_MAX_MS) await this.release(node, gone, !gone);
      else hold.release = setTimeout(() => void this.release(node, false, false), GRACE_MS);
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

  /**
   * Called before every store write under the node's lock (in the section `run` opened): resolves
   * when the lock is surely this process's for WRITE_MARGIN_MS more (renewing it first when less
   * is left); rejects with LockLostError when it is not (nothing may be written). A node this
   * process does not hold passes (not a locked write).
   */
  async fence(node: string): Promise<void> {
    const hold = this.holding.get(node);
    if (!hold) return;
    if (!hold.lost && hold.sure - this.now() < WRITE_MARGIN_MS) await this.renew(node, hold);
    if (!hold.lost && hold.sure - this.now() < WRITE_MARGIN_MS) this.lose(node, hold, 'it could not be renewed in time: the store is slow or unreachable');
    if (hold.lost) throw new LockLostError(node, hold.lost);
  }

  private lose(node: string, hold: Holding, why: string): void {
    if (hold.lost) return;
    hold.lost = why;
    clearInterval(hold.renewer);
    this.onLost(node, why);
  }

  /** Writes the lock document again on the revision held; marks the holding lost when another process took it. */
  private renew(node: string, hold: Holding): Promise<void> {
    hold.renewing = hold.renewing.then(async () => {
      if (hold.lost) return;
      const sent = this.now();
      const value = this.held();
      let next: string | undefined;
      try {
        next = await this.kv.putIf(lockKey(node), value, hold.version);
        // A conflict may come from a renewal of ours whose answer was lost: the document still names this process.
        if (next === undefined) {
          const current = await this.kv.versioned(lockKey(node));
          if (current.value !== undefined && (JSON.parse(current.value) as LockDoc).holder === this.holder) next = await this.kv.putIf(lockKey(node), value, current.version);
        }
      } catch {
        // The store did not answer: the lock stays ours until `sure` (fence() refuses writes after).
        if (hold.sure <= this.now()) this.lose(node, hold, 'it expired unrenewed: the store is unreachable');
        return;
      }
      if (next === undefined) this.lose(node, hold, 'another process took it after it expired');
      else {
        hold.version = next;
        hold.sure = sent + TTL_MS - CLOCK_SKEW_MS;
      }
    });
    return hold.renewing;
  }

  /** Gives the lock back ({} or, for a deleted node, no document); `yielding`: the next local run lets others in first. */
  private release(node: string, gone: boolean, yielding: boolean): Promise<void> {
    const hold = this.holding.get(node);
    if (!hold) return this.releasing.get(node) ?? Promise.resolve();
    this.holding.delete(node);
    clearInterval(hold.renewer);
    if (hold.release) clearTimeout(hold.release);
    if (yielding) this.yielded.add(node);
    const done = (async () => {
      await hold.renewing;
      // A lost lock is another's now: nothing to give back. A release that fails (store down)
      // leaves the lock to expire: nobody waits longer than TTL_MS.
      const g = hold.touched || hold.gen === undefined ? randomUUID() : hold.gen;
      const after = hold.lost ? undefined : await this.kv.putIf(lockKey(node), gone ? undefined : JSON.stringify({ g } satisfies LockDoc), hold.version).catch(() => undefined);
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
   * died, or an older Hermod's release). `sent`: when the winning write was sent (ms).
   */
  private async acquire(node: string): Promise<{ version: string; stale: boolean; gen: string | undefined; sent: number }> {
    if (this.yielded.delete(node)) await this.pause(node, YIELD_MS);
    const known = this.released.get(node);
    if (known !== undefined) {
      const sent = this.now();
      const version = await this.kv.putIf(lockKey(node), this.held(), known);
      if (version !== undefined) return { version, stale: false, gen: this.tokens.get(node), sent };
    }
    const counted = !this.changes.has(node);
    if (counted) this.changes.set(node, 0);
    try {
      for (;;) {
        const seen = this.changes.get(node);
        const { value, version } = await this.kv.versioned(lockKey(node));
        const doc = value === undefined ? {} : (JSON.parse(value) as LockDoc);
        if (doc.holder === undefined || (doc.until ?? 0) < this.now()) {
          const sent = this.now();
          const taken = await this.kv.putIf(lockKey(node), this.held(), version);
          if (taken !== undefined) return { version: taken, stale: true, gen: doc.holder === undefined ? doc.g : undefined, sent };
        }
        // Changed since the read (the feed said so): look again at once; else wait for the feed.
        if (this.changes.get(node) === seen) await this.pause(node, Math.max(1, Math.min(MAX_WAIT_STEP_MS, (doc.until ?? 0) - this.now() + 1)));
      }
    } finally {
      if (counted) this.changes.delete(node);
    }
  }
}
