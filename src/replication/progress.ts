// Progress of a long first publish (an existing database seen for the first time): documents
// done / total, rate and ETA — redrawn on one line when stderr is a terminal, else logged at
// most every few seconds. Resuming after an interruption continues the count from the feed.

import type { Logger } from '../log.ts';

export class Progress {
  private done = 0;
  private readonly started = Date.now();
  private lastLog = 0;
  private finished = false;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly log: Logger,
    private readonly tty: NodeJS.WriteStream | undefined = process.stderr.isTTY ? process.stderr : undefined,
  ) {}

  add(n: number): void {
    if (this.finished) return;
    this.done += n;
    const elapsed = (Date.now() - this.started) / 1000;
    const rate = elapsed > 0 ? this.done / elapsed : 0;
    const left = Math.max(this.total - this.done, 0);
    const eta = rate > 0 ? Math.round(left / rate) : undefined;
    const complete = this.done >= this.total;
    if (this.tty) {
      const pct = this.total > 0 ? Math.min(100, Math.floor((this.done / this.total) * 100)) : 100;
      this.tty.write(`\r${this.label}: ${Math.min(this.done, this.total)}/${this.total} documents (${pct}%), ${rate.toFixed(0)}/s, ETA ${eta ?? '?'} s   ${complete ? '\n' : ''}`);
    } else if (complete || Date.now() - this.lastLog > 5_000) {
      this.lastLog = Date.now();
      this.log.info(this.label, { done: this.done, total: this.total, ratePerSecond: Math.round(rate), etaSeconds: eta });
    }
    if (complete) this.finished = true;
  }
}
