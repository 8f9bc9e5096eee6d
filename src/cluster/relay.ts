// Replies that reach the wrong process. Several Hermods serving one component JID on ejabberd
// share its traffic: ejabberd picks a connection per stanza (`domain_balancing`), so the result
// of an IQ one process sent (a XEP-0356 roster read, partner discovery, an upload slot) — and the
// confirmation barrier its outbox sends to itself — may be delivered to another process. No
// balancing setting prevents it: `source`/`bare_source` pin stanzas by their sender, and the
// reply's sender is the peer, not the process that asked. So replies are correlated through the
// store: each member puts its tag in the ids it sends (`q<tag>.<n>`, `hermod-barrier-<tag>.<n>`);
// a process that receives a reply carrying another member's tag stores it in the state space
// 'relay' under that tag, and the asking member, while it waits for replies, reads its tag's
// entries every `pollMs` and takes them as if received. Cost: one store write per relayed reply,
// one range read per poll while something is awaited; added latency ≤ pollMs + two store trips.
// IQs are not retried: a retried set could run twice at the peer; a relayed reply cannot be lost
// unless the receiving process dies between receiving and storing it (then the request times out,
// as it would have if the peer had not answered).

import { parse, type Element } from 'ltx';
import type { Logger } from '../log.ts';
import type { StateOp, StateSpace } from '../store/store.ts';

export const RELAY_SPACE = 'relay';
const TAGGED = /^(?:q|hermod-barrier-)([0-9a-f]{6})\./;

/** The member tag an id we send carries (undefined: none, as on a single-process store). */
export function tagOf(id: string | undefined): string | undefined {
  return id === undefined ? undefined : TAGGED.exec(id)?.[1];
}

export interface RelayOptions {
  space: StateSpace;
  /** This member's tag (Cluster.tag). */
  tag: string;
  /** Takes a reply meant for this member, as the connection would have. */
  deliver: (stanza: Element) => void;
  /** Whether this member awaits replies now (IQs pending, barriers in flight): polls only then. */
  waiting: () => boolean;
  log: Logger;
  /** Default 100 ms. */
  pollMs?: number;
  /** Whether this member holds the work lease: then it also takes what was relayed to the leader. */
  isLeader?: () => boolean;
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
  private leaderHandler: ((stanza: Element) => void) | undefined;

  constructor(private readonly options: RelayOptions) {
    this.timer = setInterval(() => void this.poll(), options.pollMs ?? 100);
    this.timer.unref();
  }

  /** A reply (or barrier) carrying another member's tag: stored for it; true when taken so. */
  route(stanza: Element): boolean {
    if (stanza.name !== 'iq') return false;
    const tag = tagOf(stanza.attrs.id as string | undefined);
    if (tag === undefined || tag === this.options.tag) return false;
    this.enqueue({ type: 'put', key: `${tag}\0${stanza.attrs.id as string}\0${stanza.attrs.type as string}`, value: stanza.toString() });
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

  /** What the leader does with stanzas relayed to it (set once, by the replication). */
  onLeaderStanza(handler: (stanza: Element) => void): void {
    this.leaderHandler = handler;
  }

  private enqueue(op: StateOp): void {
    this.queued.push(op);
    this.relayed++;
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => void this.flush());
    }
  }

  private async flush(): Promise<void> {
    while (this.queued.length > 0) {
      const ops = this.queued;
      this.queued = [];
      await this.options.space.batch(ops).catch((err: unknown) => this.options.log.warn('relay: replies for other members not stored (they will time out there)', { replies: ops.length, reason: String(err) }));
    }
    this.flushing = false;
  }

  /** Reads and takes the replies stored for this member. Never rejects. */
  async poll(): Promise<void> {
    if (this.polling) return;
    const leader = this.leaderHandler !== undefined && (this.options.isLeader?.() ?? false);
    if (!leader && !this.options.waiting()) return;
    this.polling = true;
    try {
      if (this.options.waiting()) await this.take(this.options.tag, this.options.deliver);
      if (leader && this.leaderHandler) await this.take(LEADER, this.leaderHandler);
    } catch (err) {
      this.options.log.warn('relay: reading relayed stanzas failed', { reason: String(err) });
    } finally {
      this.polling = false;
    }
  }

  /** Hands every stanza stored under `prefix` to `deliver`, then deletes them. */
  private async take(prefix: string, deliver: (stanza: Element) => void): Promise<void> {
    const taken: StateOp[] = [];
    for await (const [key, value] of this.options.space.range(`${prefix}\0`)) {
      taken.push({ type: 'del', key });
      try {
        deliver(parse(value) as Element);
        this.received++;
      } catch (err) {
        this.options.log.warn('relay: unreadable relayed stanza dropped', { reason: String(err) });
      }
    }
    if (taken.length > 0) await this.options.space.batch(taken);
  }

  /** Deletes what was relayed to a member that is gone (`tag`). */
  async drop(tag: string): Promise<void> {
    const ops: StateOp[] = [];
    for await (const [key] of this.options.space.range(`${tag}\0`)) ops.push({ type: 'del', key });
    if (ops.length > 0) await this.options.space.batch(ops);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
