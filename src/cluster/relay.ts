// Replies that reach the wrong process. Several Hermods serving one component JID on ejabberd
// share its traffic: ejabberd picks a connection per stanza (`domain_balancing`), so the result
// of an IQ one process sent (a XEP-0356 roster read, partner discovery, an upload slot) — and the
// confirmation barrier its outbox sends to itself — may be delivered to another process. No
// balancing setting prevents it: `source`/`bare_source` pin stanzas by their sender, and the
// reply's sender is the peer, not the process that asked. So replies are correlated through the
// store: each member puts its tag in the ids it sends (`q<tag>.<n>`, `hermod-barrier-<tag>.<n>`);
// a process that receives a reply carrying another member's tag stores it in the state space
// 'relay' under that tag, and the asking member takes them as if received. It learns of them from
// the store's changes feed (StateSpace.watch: the keys other processes wrote), so a relayed reply
// costs one store write, one range read and one delete, and adds about one feed trip of latency;
// while it awaits replies it also reads its entries every `pollMs` (default 1 s), in case the
// feed is down or reconnecting (it then resends from its saved sequence anyway), and on stores
// without a feed. IQs are not retried: a retried set could run twice at the peer; a relayed
// reply cannot be lost unless the receiving process dies between receiving and storing it (then
// the request times out, as it would have if the peer had not answered).
//
// Barriers first go back to the server (`send`): another member's barrier is a ping from the
// component JID to itself, and that it reached any process already says all its member needs to
// know (the server routed everything that member wrote before it), so the process that received
// it sends it on unchanged to the component JID, and the server balances it again — to its member
// with probability 1/processes each time (random balancing). A bounce costs the server one
// routing; a barrier relayed through the store costs a write, a read and a delete (with two
// processes half of all barriers were relayed so). After BOUNCES bounces of one barrier by this
// process (its member is gone, or the balancing sends it here every time), or when the component
// is offline, it is relayed through the store after all.
//
// Delivery is at least once: an entry is deleted only after its handler took it. A handler that
// fails (it rejects or throws) leaves the entry for another try, RETRY_FIRST_MS later, doubling,
// RELAY_ATTEMPTS tries in all; then it is logged as an error and deleted. A delete that fails, or
// a change of leader while a leader-bound entry is taken, hands it to a handler once more: the
// handlers take a second copy as a no-op (IQ replies and barriers: their id is settled already;
// partner events: the replication applies an item by revision, a known revision writes nothing).
// Storing: replies for other members that the store does not take are dropped with a warning
// (their requests time out there, as if the peer had not answered); stanzas for the leader (a
// partner's event: nothing times out for it, and the leader's next notification from that node
// would move its history position past it) are stored again, LEADER_RETRY_FIRST_MS later,
// doubling up to RETRY_MAX_MS, while the process runs — at most LEADER_HELD_MAX of them wait.

import { parse, type Element } from 'ltx';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../log.ts';
import type { StateOp, StateSpace } from '../store/store.ts';

export const RELAY_SPACE = 'relay';
const TAGGED = /^(?:q|hermod-barrier-)([0-9a-f]{6})\./;
const BARRIER = 'hermod-barrier-';
/** How many times this process sends one barrier of another member back to the server before relaying it through the store (header). */
export const BOUNCES = 4;

/** The member tag an id we send carries (undefined: none, as on a single-process store). */
export function tagOf(id: string | undefined): string | undefined {
  return id === undefined ? undefined : TAGGED.exec(id)?.[1];
}

/** Takes a relayed stanza; rejects or throws when it could not (the relay tries again later). */
export type RelayHandler = (stanza: Element) => void | Promise<void>;

/** Tries of one relayed stanza whose handler fails, the wait before the second and the longest (ms). */
export const RELAY_ATTEMPTS = 5;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10_000;
/** Storing stanzas for the leader again after the store refused them: first wait (ms), and the most that wait (header). */
const LEADER_RETRY_FIRST_MS = 500;
export const LEADER_HELD_MAX = 10_000;

export interface RelayOptions {
  space: StateSpace;
  /** This member's tag (Cluster.tag). */
  tag: string;
  /** Takes a reply meant for this member, as the connection would have. */
  deliver: RelayHandler;
  /** Whether this member awaits replies now (IQs pending, barriers in flight): polls only then. */
  waiting: () => boolean;
  log: Logger;
  /** Fallback period of reading this member's entries while it waits (the changes feed wakes it sooner), ms. Default 1000. */
  pollMs?: number;
  /** Whether this member holds the work lease: then it also takes what was relayed to the leader. */
  isLeader?: () => boolean;
  /** Sends a stanza to the server at once (not behind the notifications); false when offline. With it, other members' barriers are bounced (header). */
  send?: (stanza: Element) => boolean;
}

/** The key prefix of stanzas relayed to whichever member holds the work lease. */
const LEADER = 'leader';

export class Relay {
  private queued: StateOp[] = [];
  private flushing = false;
  private polling = false;
  private readonly timer: NodeJS.Timeout;
  relayed = 0;
  received = 0;
  private counter = 0;
  private leaderHandler: RelayHandler | undefined;
  /** Bounces so far of other members' barriers, by id (most end at their member and are never seen here again). */
  private readonly bounced = new LRUCache<string, number>({ max: 10_000 });
  bounces = 0;
  /** Entries whose handler failed: tries so far and when the next may be (ms). */
  private readonly failed = new Map<string, { tries: number; next: number }>();
  /** A poll asked for while one ran: run again after it. */
  private again = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryAt = 0;
  private readonly unwatch: (() => void) | undefined;
  /** Stanzas for the leader waiting to be stored again (storeAgain), their timers, and the current wait (ms; 0: none failed lately). */
  private leaderHeld = 0;
  private readonly leaderTimers = new Set<NodeJS.Timeout>();
  private leaderWait = 0;
  private stopped = false;

  constructor(private readonly options: RelayOptions) {
    this.timer = setInterval(() => void this.poll(), options.pollMs ?? 1_000);
    this.timer.unref();
    const mine = `${options.tag}\0`;
    const leaders = `${LEADER}\0`;
    this.unwatch = options.space.watch?.((key) => {
      if (key.startsWith(mine) || (key.startsWith(leaders) && this.leaderHandler !== undefined)) void this.poll();
    });
  }

  /** A reply (or barrier) carrying another member's tag: stored for it; true when taken so. */
  route(stanza: Element): boolean {
    if (stanza.name !== 'iq') return false;
    const tag = tagOf(stanza.attrs.id as string | undefined);
    if (tag === undefined || tag === this.options.tag) return false;
    if (this.bounce(stanza)) return true;
    this.enqueue({ type: 'put', key: `${tag}\0${stanza.attrs.id as string}\0${stanza.attrs.type as string}`, value: stanza.toString() });
    return true;
  }

  /** Sends another member's barrier (the ping itself) back to the server, BOUNCES times at most; false: relay it. */
  private bounce(stanza: Element): boolean {
    const id = stanza.attrs.id as string;
    if (!this.options.send || stanza.attrs.type !== 'get' || !id.startsWith(BARRIER)) return false;
    const times = this.bounced.get(id) ?? 0;
    if (times >= BOUNCES || !this.options.send(stanza)) {
      this.bounced.delete(id);
      return false;
    }
    this.bounced.set(id, times + 1);
    this.bounces++;
    return true;
  }

  /**
   * A stanza for the work-lease holder's work (a partner's pub/sub event for the replication it
   * runs) that reached another member: stored for the leader, which takes it within pollMs.
   */
  toLeader(stanza: Element): void {
    const stamp = Date.now().toString(16).padStart(12, '0');
    this.enqueue({ type: 'put', key: `${LEADER}\0${stamp}-${this.options.tag}-${(this.counter++).toString(36)}`, value: stanza.toString() });
  }

  /** What the leader does with stanzas relayed to it (set once, by the replication; see the header on retries). */
  onLeaderStanza(handler: RelayHandler): void {
    this.leaderHandler = handler;
  }

  private enqueue(op: StateOp, counted = true): void {
    this.queued.push(op);
    if (counted) this.relayed++;
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => void this.flush());
    }
  }

  private async flush(): Promise<void> {
    while (this.queued.length > 0) {
      const ops = this.queued;
      this.queued = [];
      try {
        await this.options.space.batch(ops);
        this.leaderWait = 0;
      } catch (err) {
        const forLeader = ops.filter((op) => op.key.startsWith(`${LEADER}\0`));
        const replies = ops.length - forLeader.length;
        if (replies > 0) this.options.log.warn('relay: replies for other members not stored (they will time out there)', { replies, reason: String(err) });
        if (forLeader.length > 0) this.storeAgain(forLeader, err);
      }
    }
    this.flushing = false;
  }

  /** Stanzas for the leader the store did not take: stored again later (header). */
  private storeAgain(ops: StateOp[], err: unknown): void {
    if (this.stopped) return;
    if (this.leaderHeld + ops.length > LEADER_HELD_MAX) {
      this.options.log.error('relay: partner events for the leader not stored, and too many wait to be stored again: dropped (their documents wait for their next change)', { stanzas: ops.length, waiting: this.leaderHeld, reason: String(err) });
      return;
    }
    this.leaderWait = Math.min(this.leaderWait === 0 ? LEADER_RETRY_FIRST_MS : this.leaderWait * 2, RETRY_MAX_MS);
    this.leaderHeld += ops.length;
    this.options.log.warn('relay: partner events for the leader not stored; storing them again', { stanzas: ops.length, retryInMs: this.leaderWait, reason: String(err) });
    const timer = setTimeout(() => {
      this.leaderTimers.delete(timer);
      this.leaderHeld -= ops.length;
      for (const op of ops) this.enqueue(op, false);
    }, this.leaderWait);
    timer.unref();
    this.leaderTimers.add(timer);
  }

  /** Reads and takes the replies stored for this member. Never rejects. */
  async poll(): Promise<void> {
    if (this.polling) {
      this.again = true;
      return;
    }
    const leader = this.leaderHandler !== undefined && (this.options.isLeader?.() ?? false);
    if (!leader && !this.options.waiting()) return;
    this.polling = true;
    this.again = false;
    try {
      // Its own replies first: they are waited for (timeouts), the leader's stanzas are work. A
      // history <fin/> taken before its results is waited on by the query (PubsubClient.history).
      if (this.options.waiting()) await this.take(this.options.tag, this.options.deliver);
      if (leader && this.leaderHandler) await this.take(LEADER, this.leaderHandler);
    } catch (err) {
      this.options.log.warn('relay: reading relayed stanzas failed', { reason: String(err) });
    } finally {
      this.polling = false;
    }
    if (this.again) void this.poll();
  }

  /**
   * Hands every stanza stored under `prefix` to `deliver`, then deletes those it took (and those
   * unreadable or given up on). One whose handler failed stays for a later try (header).
   */
  private async take(prefix: string, deliver: RelayHandler): Promise<void> {
    const done: StateOp[] = [];
    const now = Date.now();
    for await (const [key, value] of this.options.space.range(`${prefix}\0`)) {
      const failed = this.failed.get(key);
      if (failed && failed.next > now) continue;
      let stanza: Element;
      try {
        stanza = parse(value) as Element;
      } catch (err) {
        this.options.log.warn('relay: unreadable relayed stanza dropped', { reason: String(err) });
        done.push({ type: 'del', key });
        continue;
      }
      try {
        await deliver(stanza);
        this.received++;
        this.failed.delete(key);
        done.push({ type: 'del', key });
      } catch (err) {
        const tries = (failed?.tries ?? 0) + 1;
        if (tries >= RELAY_ATTEMPTS) {
          this.failed.delete(key);
          done.push({ type: 'del', key });
          this.options.log.error('relay: a relayed stanza failed every try and is dropped', { key: key.split('\0').join(' '), tries, reason: String(err) });
        } else {
          const wait = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (tries - 1));
          this.failed.set(key, { tries, next: Date.now() + wait });
          this.options.log.warn('relay: handling a relayed stanza failed; it stays for another try', { key: key.split('\0').join(' '), tries, retryInMs: wait, reason: String(err) });
          this.retryLater(wait);
        }
      }
    }
    if (done.length > 0) await this.options.space.batch(done);
  }

  /** A poll `ms` from now, unless one is due sooner. */
  private retryLater(ms: number): void {
    const at = Date.now() + ms;
    if (this.retryTimer && this.retryAt <= at) return;
    clearTimeout(this.retryTimer);
    this.retryAt = at;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.poll();
    }, ms);
    this.retryTimer.unref();
  }

  /**
   * Deletes what was stored for tags other than `liveTags` (and the leader's): replies whose id
   * carries the tag of no member (forged, or for a member gone before its adoption dropped them)
   * would otherwise stay in the store for good. Resolves to how many went.
   */
  async sweep(liveTags: ReadonlySet<string>): Promise<number> {
    const ops: StateOp[] = [];
    for await (const [key] of this.options.space.range('')) {
      const end = key.indexOf('\0');
      const tag = end === -1 ? key : key.slice(0, end);
      if (tag !== LEADER && !liveTags.has(tag)) ops.push({ type: 'del', key });
    }
    if (ops.length > 0) {
      await this.options.space.batch(ops);
      this.options.log.warn('relay: replies for no member deleted', { replies: ops.length });
    }
    return ops.length;
  }

  /** Deletes what was relayed to a member that is gone (`tag`). */
  async drop(tag: string): Promise<void> {
    const ops: StateOp[] = [];
    for await (const [key] of this.options.space.range(`${tag}\0`)) ops.push({ type: 'del', key });
    if (ops.length > 0) await this.options.space.batch(ops);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    for (const timer of this.leaderTimers) clearTimeout(timer);
    if (this.leaderHeld > 0) this.options.log.warn('relay: stopping with partner events for the leader not stored (their documents wait for their next change)', { stanzas: this.leaderHeld });
    this.leaderTimers.clear();
    this.unwatch?.();
  }
}
