// This process as a member of a Hermod cluster: several processes serving one component JID on
// one shared store (store.backend "couchdb"). Each member keeps a heartbeat in the store and tries
// for the one work lease (src/cluster/lease.ts); the holder — the leader — does what must be done
// once: item-expiry and subscription-lease timers, the Ajatus/Midgard sources and partner
// discovery, and adopting what a dead member left (its notification journal, replies relayed to
// it). When the leader dies its lease lapses and another member takes it within ttl + ttl/8:
// its last renewal (written every ttl/4) is seen by the others within ttl/8 (they read the lease
// and the heartbeats every ttl/8), and each checks again at the very moment a value it watches
// will have been quiet for a ttl (Observer.nextLapse), not at its next round. The holder counts
// from the start of its renewal, so it stops before anyone may take over (lease.ts).
// On a store only one process uses (LevelDB, memory) this process is the whole cluster: it is
// the leader from the start and writes no heartbeat.
//
// Fencing: a member whose heartbeat was removed by the leader (it looked dead for a TTL: a stall
// or a partition) has had its journal adopted; it must not go on delivering it, so `onFenced`
// is called (the app exits: a supervisor restarts it under a new member id).

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../log.ts';
import type { StateSpace, Store } from '../store/store.ts';
import { CLUSTER_SPACE, Heartbeat, Lease, memberKey, Observer, type LeaseRecord, type MemberRecord } from './lease.ts';

/** The name of the lease whose holder does the once-only work. */
export const WORK_LEASE = 'work';
/** The member id on a store only this process uses. */
export const LOCAL_MEMBER = 'local';
export const DEFAULT_TTL_MS = 4_000;

/** One round of a member's renewal loop: when it starts and whether it writes. */
export interface Round {
  /** Start, ms on this process's clock. */
  at: number;
  /** True: renew the heartbeat and the lease (every ttl/4); false: only read the others' (every ttl/8, and at a lapse). */
  write: boolean;
}

/**
 * The round after one that started at `lastStart` (ms): the next write ttl/4 after the last
 * write round's start (`lastWrite`), a read-only round ttl/8 after `lastStart`, or one at
 * `nextLapse` (Observer.nextLapse) if that comes first. Periods are at least 50 / 25 ms.
 */
export function nextRound(ttlMs: number, lastStart: number, lastWrite: number, nextLapse?: number): Round {
  const renewAt = lastWrite + Math.max(50, Math.floor(ttlMs / 4));
  const at = Math.min(renewAt, lastStart + Math.max(25, Math.floor(ttlMs / 8)), nextLapse ?? Infinity);
  return { at, write: at === renewAt };
}

/** How often the leader sweeps what was stored for no live member (ClusterOptions.sweep). */
const SWEEP_EVERY_MS = 60_000;

export interface ClusterOptions {
  store: Store;
  /** The component JID this process serves (shown in status). */
  jid: string;
  /** True when other processes may share the store (CouchDB): heartbeats and a real lease. */
  shared: boolean;
  /** Lease and heartbeat lifetime in ms (renewed every ttl/4). Default 4 000. */
  ttlMs?: number;
  log: Logger;
  /** Called once another member's heartbeat lapsed and was removed (or it left state without one): take over its state. */
  adopt?: (member: string) => Promise<void>;
  /** Members (other than this one) that left durable state to adopt (their journals). */
  leftovers?: () => Promise<string[]>;
  /** This member's heartbeat was removed by another: it was declared dead. */
  onFenced?: () => void;
  /**
   * Called by the leader about once a minute (with the leftovers look) with the tags of the members
   * that have a heartbeat (this one's included): what is stored for any other tag may go.
   */
  sweep?: (liveTags: ReadonlySet<string>) => Promise<void>;
}

/** What `hermod status` shows of the cluster. */
export interface ClusterStatus {
  member: string;
  shared: boolean;
  ttlMs: number;
  members: Array<{ id: string; host: string; pid: number; self: boolean; alive: boolean; lastBeatAgoMs?: number; startedAt: number }>;
  leases: Array<{ name: string; holder: string | undefined; term?: number; heldHere: boolean }>;
}

export class Cluster {
  readonly member: string;
  readonly ttlMs: number;
  private readonly space: StateSpace;
  private readonly observer: Observer;
  private readonly lease: Lease;
  private readonly heartbeat: Heartbeat | undefined;
  private readonly listeners: Array<(leader: boolean) => void> = [];
  private leader = false;
  private timer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private fenced = false;
  private registered = false;
  private adopting: Promise<void> | undefined;
  /** Start of the last round that wrote (heartbeat and lease renewal). */
  private lastWrite = 0;
  /** Write rounds so far. */
  private writeRounds = 0;
  /** When the leader last swept (ClusterOptions.sweep; epoch ms). */
  private sweptAt = 0;

  constructor(private readonly options: ClusterOptions) {
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.member = options.shared ? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}` : LOCAL_MEMBER;
    this.space = options.store.state(CLUSTER_SPACE);
    this.observer = new Observer(this.ttlMs);
    this.lease = new Lease(this.space, WORK_LEASE, this.member, this.ttlMs, this.observer);
    this.heartbeat = options.shared ? new Heartbeat(this.space, { id: this.member, host: hostname(), pid: process.pid, jid: options.jid, startedAt: Date.now() }) : undefined;
  }

  /** A short tag of this member for ids it sends (IQ ids, barriers): replies carrying another's tag are relayed. */
  get tag(): string {
    return this.options.shared ? this.member.slice(-6) : '';
  }

  /** True once stop() has been called (losing the lease then is no failure). */
  get stopping(): boolean {
    return this.stopped;
  }

  /** True while this process holds the work lease. */
  isLeader(): boolean {
    return this.options.shared ? this.lease.held() : !this.stopped;
  }

  /** Calls `fn(leader)` now and on every change of leadership. */
  onLeadership(fn: (leader: boolean) => void): void {
    this.listeners.push(fn);
    fn(this.leader);
  }

  /**
   * Writes this member's first heartbeat: before any state of its own (its journal) is in the
   * store, so that a leader never takes state with no heartbeat for a dead member's. Rejects with
   * the store's error.
   */
  async register(): Promise<void> {
    if (this.registered || !this.heartbeat) return;
    if (!(await this.heartbeat.beat())) throw new Error(`cluster member ${this.member}: heartbeat could not be registered`);
    this.registered = true;
  }

  /** Registers (if not yet) and makes the first try for the lease (awaited), then renews every ttl/4. Rejects with the store's error. */
  async start(): Promise<void> {
    if (!this.options.shared) {
      this.setLeader(true);
      await this.adoptLeftovers(new Set());
      return;
    }
    await this.register();
    this.lastWrite = Date.now();
    await this.tick(true);
    this.schedule(this.lastWrite);
  }

  /** The next round (nextRound), timed from the start of the last one (not its end: a slow store must not stretch renewals). */
  private schedule(lastStart: number): void {
    if (this.stopped || this.fenced) return;
    const round = nextRound(this.ttlMs, lastStart, this.lastWrite, this.observer.nextLapse());
    this.timer = setTimeout(() => {
      const started = Date.now();
      if (round.write) this.lastWrite = started;
      this.running = this.tick(round.write).finally(() => {
        this.running = undefined;
        this.schedule(started);
      });
    }, Math.max(0, round.at - Date.now()));
    this.timer.unref();
  }

  /**
   * One round: with `write`, heartbeat and lease renewal at once; without, only the lease read
   * (taken if it lapsed) when another holds it. Then, beside it, the heartbeats read and, as
   * leader, dead members adopted. Never rejects.
   */
  private async tick(write: boolean): Promise<void> {
    const [beat, lease] = await Promise.allSettled([
      this.heartbeat && write ? this.heartbeat.beat() : Promise.resolve(true),
      write || !this.lease.renewing ? this.lease.tick() : Promise.resolve(true),
    ]);
    if (beat.status === 'fulfilled' && !beat.value) {
      this.fenced = true;
      this.setLeader(false);
      await this.lease.release().catch(() => undefined);
      this.options.log.error('cluster: this member was declared dead by the leader (its heartbeat was removed): its journal has been adopted', { member: this.member });
      this.options.onFenced?.();
      return;
    }
    for (const r of [beat, lease]) if (r.status === 'rejected') this.options.log.warn('cluster: renewal failed (store unreachable?)', { member: this.member, reason: String(r.reason) });
    const held = this.lease.held();
    this.setLeader(held);
    if (held) {
      clearTimeout(this.expiryTimer);
      // The hold runs out unless renewed: stop the work at that moment, not at the next tick.
      this.expiryTimer = setTimeout(() => this.setLeader(this.lease.held()), Math.max(0, this.lease.until - Date.now()) + 1);
      this.expiryTimer.unref();
    }
    // Every member watches the heartbeats (so that a new leader knows at once who went quiet);
    // the leader acts. Adoption may take a while (a large journal): it must not hold renewals back.
    // Journals left without a heartbeat are rare (a member gone before its first beat was seen):
    // looked for every fourth write round, once per ttl.
    this.adopting ??= this.adoptDeadMembers(write && this.writeRounds++ % 4 === 0)
      .catch((err: unknown) => this.options.log.warn('cluster: adopting a dead member failed (tried again)', { reason: String(err) }))
      .finally(() => (this.adopting = undefined));
  }

  private setLeader(leader: boolean): void {
    if (leader === this.leader) return;
    this.leader = leader;
    this.options.log.info(leader ? 'cluster: this member holds the work lease' : 'cluster: this member no longer holds the work lease', { member: this.member, lease: WORK_LEASE });
    for (const fn of this.listeners) fn(leader);
  }

  /** Members with a heartbeat in the store, raw values by id. */
  private async heartbeats(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for await (const [key, raw] of this.space.range(memberKey(''))) out.set(key.slice(memberKey('').length), raw);
    return out;
  }

  /**
   * Removes the heartbeats that lapsed (fencing their owners) and adopts what they and, with
   * `leftoversToo`, heartbeat-less members left.
   */
  private async adoptDeadMembers(leftoversToo: boolean): Promise<void> {
    // Leftovers first: a member writes its heartbeat before any state, so one with state read
    // here and no heartbeat read next is gone for good.
    const leftovers = this.isLeader() && leftoversToo ? new Set((await this.options.leftovers?.()) ?? []) : new Set<string>();
    const beats = await this.heartbeats();
    for (const [id, raw] of beats) {
      if (id === this.member) continue;
      if (!this.observer.lapsed(memberKey(id), raw) || !this.isLeader()) continue;
      if (!(await this.space.swap(memberKey(id), raw, undefined))) continue; // it beat meanwhile
      this.observer.forget(memberKey(id));
      this.options.log.warn('cluster: a member stopped beating: its heartbeat removed, its journal adopted', { member: id, quietMs: this.ttlMs });
      await this.options.adopt?.(id);
      leftovers.delete(id);
    }
    if (!this.isLeader()) return;
    for (const id of beats.keys()) leftovers.delete(id);
    await this.adoptLeftovers(leftovers);
    if (leftoversToo && this.options.sweep && Date.now() - this.sweptAt >= SWEEP_EVERY_MS) {
      this.sweptAt = Date.now();
      // Read after the adoptions: a member that started meanwhile beat before it sent anything.
      const live = new Set([...(await this.heartbeats()).keys()].map((id) => id.slice(-6)));
      live.add(this.tag);
      await this.options.sweep(live);
    }
  }

  private async adoptLeftovers(known: Set<string>): Promise<void> {
    const leftovers = this.options.shared ? known : new Set((await this.options.leftovers?.()) ?? []);
    leftovers.delete(this.member);
    for (const id of leftovers) await this.options.adopt?.(id);
  }

  /** Members and leases as the store has them (for `hermod status`). */
  async status(): Promise<ClusterStatus> {
    const members: ClusterStatus['members'] = [];
    const beats = this.options.shared ? await this.heartbeats() : new Map<string, string>();
    if (!this.options.shared) members.push({ id: this.member, host: hostname(), pid: process.pid, self: true, alive: true, startedAt: 0 });
    for (const [id, raw] of beats) {
      const m = JSON.parse(raw) as MemberRecord;
      if (id !== this.member) this.observer.lapsed(memberKey(id), raw); // notes a change seen now
      const quiet = id === this.member ? 0 : this.observer.quietFor(memberKey(id));
      members.push({ id, host: m.host, pid: m.pid, self: id === this.member, alive: quiet === undefined || quiet < this.ttlMs, ...(quiet !== undefined ? { lastBeatAgoMs: quiet } : {}), startedAt: m.startedAt });
    }
    const lease: LeaseRecord | undefined = this.options.shared ? await this.lease.read() : { holder: this.member, term: 1, beat: 0, at: 0 };
    return {
      member: this.member,
      shared: this.options.shared,
      ttlMs: this.ttlMs,
      members,
      leases: [{ name: WORK_LEASE, holder: lease?.holder, ...(lease ? { term: lease.term } : {}), heldHere: this.isLeader() }],
    };
  }

  /** Releases the lease and removes the heartbeat (a clean stop: another member takes over at once). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.expiryTimer);
    await this.running;
    await this.adopting;
    this.setLeader(false);
    if (!this.options.shared || this.fenced) return;
    await this.lease.release().catch((err: unknown) => this.options.log.warn('cluster: lease not released', { reason: String(err) }));
    await this.heartbeat?.remove().catch((err: unknown) => this.options.log.warn('cluster: heartbeat not removed', { reason: String(err) }));
  }
}
