// pubsub#item_expire without a cron job: one timer, set for the earliest due time over all
// nodes. When it fires, the nodes that are due get their expired items removed (by the injected
// `expire`, which answers the node's next due time) and the timer is set again. Pure scheduling:
// no store, no XMPP; the clock and the timer are injectable for tests.

export interface Timers {
  now(): number;
  /** Calls fn after ms; must not keep the process alive on its own. */
  setTimer(fn: () => void, ms: number): { cancel(): void };
}

export const realTimers: Timers = {
  now: Date.now,
  setTimer(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/** setTimeout cannot wait longer than this; a far due time is reached in several waits. */
const LONGEST_WAIT = 2 ** 31 - 1;

export class ExpiryScheduler {
  private readonly due = new Map<string, number>();
  private timer: { cancel(): void } | undefined;
  private timerAt = Infinity;
  private running = false;
  private stopped = false;

  constructor(
    private readonly timers: Timers,
    /** Removes the node's expired items; resolves to its next due time (undefined: none). */
    private readonly expire: (node: string) => Promise<number | undefined>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** The node's next expiry is at `at` (undefined: it has none). */
  set(node: string, at: number | undefined): void {
    if (at === undefined) this.due.delete(node);
    else this.due.set(node, at);
    this.arm();
  }

  /** Like set, but only ever brings the node's due time forward. */
  atLeastBy(node: string, at: number): void {
    const current = this.due.get(node);
    if (current === undefined || at < current) this.set(node, at);
  }

  nextDue(node: string): number | undefined {
    return this.due.get(node);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private arm(): void {
    if (this.stopped || this.running) return;
    let earliest = Infinity;
    for (const at of this.due.values()) if (at < earliest) earliest = at;
    if (earliest === this.timerAt) return;
    this.timer?.cancel();
    this.timer = undefined;
    this.timerAt = earliest;
    if (earliest === Infinity) return;
    const wait = Math.min(Math.max(0, earliest - this.timers.now()), LONGEST_WAIT);
    this.timer = this.timers.setTimer(() => void this.fire(), wait);
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    this.timerAt = Infinity;
    this.running = true;
    try {
      const now = this.timers.now();
      for (const [node, at] of [...this.due]) {
        if (at > now || this.stopped) continue;
        this.due.delete(node);
        try {
          const next = await this.expire(node);
          if (next !== undefined) this.atLeastBy(node, next);
        } catch (err) {
          this.onError(err);
          this.atLeastBy(node, now + 60_000); // try again later
        }
      }
    } finally {
      this.running = false;
      this.arm();
    }
  }
}
