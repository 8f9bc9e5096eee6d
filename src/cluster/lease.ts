// Leases and heartbeats in the store, for several Hermod processes on one shared store (CouchDB).
// A lease is one key of the state space 'cluster' (`lease\0<name>`), written only by
// compare-and-set (StateSpace.swap: CouchDB's `_rev` check), so two processes never both take it.
// A member's heartbeat is one key too (`member\0<id>`), rewritten by its owner each renewal.
//
// Time without shared clocks: a process never compares its clock with another's. A lease or
// heartbeat counts as lapsed when this process has seen the same value for `ttlMs` of its own
// time (the holder rewrites it every ttl/4). The holder, in turn, counts itself holder only until
// `ttlMs` after the start of its last successful renewal, which began before the value any
// other process saw was written: so the holder stops before anyone may take over (up to clock
// rate drift, not offset). A clean release deletes the lease: another takes it at its next renewal.

import type { StateSpace } from '../store/store.ts';

/** The stored lease value. */
export interface LeaseRecord {
  holder: string;
  /** Increases with every change of holder. */
  term: number;
  /** Increases with every renewal (what observers see change). */
  beat: number;
  /** The holder's wall clock at the renewal, ms since epoch (shown by `hermod status` only). */
  at: number;
}

/** The stored heartbeat of a member. */
export interface MemberRecord {
  id: string;
  host: string;
  pid: number;
  /** The component JID it serves. */
  jid: string;
  startedAt: number;
  beat: number;
  /** The member's wall clock at its last beat (shown by `hermod status` only). */
  at: number;
}

export const CLUSTER_SPACE = 'cluster';
export const leaseKey = (name: string): string => `lease\0${name}`;
export const memberKey = (id: string): string => `member\0${id}`;

/** When each key's value was first seen as it is now, in this process's time: lapse detection. */
export class Observer {
  private readonly seen = new Map<string, { raw: string | undefined; since: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records the value read now; true when it has not changed for ttlMs. */
  lapsed(key: string, raw: string | undefined): boolean {
    const t = this.now();
    const before = this.seen.get(key);
    if (!before || before.raw !== raw) {
      this.seen.set(key, { raw, since: t });
      return false;
    }
    return t - before.since >= this.ttlMs;
  }

  /** Milliseconds since the value was last seen to change (undefined: never read). */
  quietFor(key: string): number | undefined {
    const before = this.seen.get(key);
    return before && this.now() - before.since;
  }

  forget(key: string): void {
    this.seen.delete(key);
  }

  /**
   * The earliest moment (ms, this process's clock) at which a value seen but not yet lapsed will
   * have been quiet for ttlMs; undefined when no such value is watched. Checking then, instead of
   * at the next regular round, keeps the round period out of the takeover time.
   */
  nextLapse(): number | undefined {
    const t = this.now();
    let next: number | undefined;
    for (const { since } of this.seen.values()) {
      const at = since + this.ttlMs;
      if (at > t && (next === undefined || at < next)) next = at;
    }
    return next;
  }
}

/**
 * One named lease, as seen by one member. `tick()` acquires or renews it; `held()` says whether
 * this member may do the lease's work right now.
 */
export class Lease {
  private validUntil = 0;
  private mine: string | undefined;

  constructor(
    private readonly space: StateSpace,
    readonly name: string,
    private readonly member: string,
    private readonly ttlMs: number,
    private readonly observer: Observer,
    private readonly now: () => number = Date.now,
  ) {}

  /** True while this member holds the lease (its last renewal is younger than the TTL). */
  held(): boolean {
    return this.now() < this.validUntil;
  }

  /** True while this member has a renewal of its own to make (it took the lease and was not told otherwise). */
  get renewing(): boolean {
    return this.mine !== undefined;
  }

  /** When the hold ends unless renewed (ms, this process's clock; 0: not held). */
  get until(): number {
    return this.held() ? this.validUntil : 0;
  }

  /**
   * Renews the lease if held, takes it if free or lapsed; resolves to held(). Rejects with the
   * store's error (the hold then simply runs out).
   */
  async tick(): Promise<boolean> {
    const started = this.now();
    const key = leaseKey(this.name);
    if (this.mine !== undefined) {
      // Renewal: one compare-and-set over what we last wrote (CouchDB: one PUT with its _rev).
      const current = JSON.parse(this.mine) as LeaseRecord;
      const value = JSON.stringify({ ...current, beat: current.beat + 1, at: Date.now() });
      if (await this.space.swap(key, this.mine, value)) {
        this.mine = value;
        this.validUntil = started + this.ttlMs;
        return true;
      }
      this.mine = undefined; // taken meanwhile: read what is there
    }
    const raw = await this.space.get(key);
    const current = raw === undefined ? undefined : (JSON.parse(raw) as LeaseRecord);
    let next: LeaseRecord | undefined;
    if (current === undefined) next = { holder: this.member, term: 1, beat: 0, at: Date.now() };
    else if (current.holder !== this.member && this.observer.lapsed(key, raw)) next = { holder: this.member, term: current.term + 1, beat: 0, at: Date.now() };
    else if (current.holder === this.member) {
      // Ours, but not what we last wrote (a restart under the same member id): take it over anew.
      next = { holder: this.member, term: current.term + 1, beat: 0, at: Date.now() };
    }
    if (next === undefined) {
      this.validUntil = 0;
      this.mine = undefined;
      return false;
    }
    const value = JSON.stringify(next);
    if (await this.space.swap(key, raw, value)) {
      this.mine = value;
      this.validUntil = started + this.ttlMs;
    } else {
      this.mine = undefined;
      this.validUntil = 0;
    }
    return this.held();
  }

  /** Gives the lease up (deletes it if still ours): another member takes it at its next tick. */
  async release(): Promise<void> {
    this.validUntil = 0;
    const mine = this.mine;
    this.mine = undefined;
    if (mine !== undefined) await this.space.swap(leaseKey(this.name), mine, undefined);
  }

  /** The stored lease (undefined: free). */
  async read(): Promise<LeaseRecord | undefined> {
    const raw = await this.space.get(leaseKey(this.name));
    return raw === undefined ? undefined : (JSON.parse(raw) as LeaseRecord);
  }
}

/**
 * This member's heartbeat. `beat()` rewrites it by compare-and-set: false means someone else
 * changed or removed it — the member was declared dead and its journal adopted (fenced).
 */
export class Heartbeat {
  private mine: string | undefined;
  /** Beats whose write rejected (each may have reached the store all the same), newest first. */
  private unsure: string[] = [];
  private record: MemberRecord;

  constructor(
    private readonly space: StateSpace,
    record: Omit<MemberRecord, 'beat' | 'at'>,
  ) {
    this.record = { ...record, beat: 0, at: Date.now() };
  }

  /**
   * Writes the next beat; resolves to false when the heartbeat was taken away (fenced). Rejects
   * with the store's error; such a beat may still have been written (its reply lost), so the
   * next beat also accepts that value as the current one.
   */
  async beat(): Promise<boolean> {
    const next = { ...this.record, beat: this.record.beat + 1, at: Date.now() };
    const value = JSON.stringify(next);
    const key = memberKey(next.id);
    let ok: boolean;
    try {
      ok = await this.space.swap(key, this.mine, value);
      for (const maybe of this.unsure) if (!ok) ok = await this.space.swap(key, maybe, value);
    } catch (err) {
      this.unsure = [value, ...this.unsure].slice(0, 8);
      throw err;
    }
    this.unsure = [];
    if (!ok) return false;
    this.record = next;
    this.mine = value;
    return true;
  }

  /** Removes the heartbeat (clean stop). */
  async remove(): Promise<void> {
    if (this.mine !== undefined) await this.space.swap(memberKey(this.record.id), this.mine, undefined);
    this.mine = undefined;
  }
}
