// What each of replication's publishes waits for before its source may record it: the journal
// holding its notifications (a kill -9 after the record must not lose them), and the outbox not
// holding more than a bound of unwritten notifications (a source must not outrun the server, nor
// fill the outbox while the server is down: Outbox.whenBelow). Both waits can be long when
// something is down: the journal retries a store that refuses writes for as long as Hermod runs,
// and the outbox holds producers until the server is back. A stop must not wait on them, or the
// sources (which wait for their batch) could not stop, and the journal (closed after them) would
// never give up: so stop() lets held producers go on at once, and makes waits for the journal end
// after `stopWaitMs` with an error, so the batch is not recorded and is published again at the
// next start (at least once).

import type { NotificationJournal } from '../component/journal.ts';
import type { Outbox } from '../component/outbox.ts';

export interface PublishGateOptions {
  /** Most characters of notifications unwritten in the outbox before a publish waits. */
  backlogChars: number;
  /** Longest such wait while connected (ms). */
  backlogWaitMs: number;
  /** How long, once stopping, a wait for the journal may still take (ms). */
  stopWaitMs: number;
}

/** The journal could not take a publish's notifications before Hermod stopped. */
export class JournalNotDurable extends Error {
  constructor(ms: number) {
    super(`stopping: the notification journal did not take this batch's notifications within ${ms} ms (the store refuses writes); the batch is not recorded and is published again at the next start`);
    this.name = 'JournalNotDurable';
  }
}

export class PublishGate {
  /** Waits for the journal under way: rejected with JournalNotDurable once a stop gives up on them. */
  private readonly held = new Set<(err: Error) => void>();
  private gaveUp = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly journal: Pick<NotificationJournal, 'durable'>,
    private readonly outbox: Pick<Outbox, 'whenBelow' | 'releaseProducers'>,
    private readonly o: PublishGateOptions,
  ) {}

  /**
   * Resolves once what was published so far is in the journal and the outbox's backlog is below
   * its bound (see the head comment). Rejects with JournalNotDurable after a stop gave up on the
   * journal, or with the journal's own error when it was closed without the writes.
   */
  async passed(): Promise<void> {
    if (this.gaveUp) throw new JournalNotDurable(this.o.stopWaitMs);
    let giveUp: (err: Error) => void = () => undefined;
    const stopped = new Promise<never>((_, reject) => (giveUp = reject));
    this.held.add(giveUp);
    try {
      await Promise.race([this.journal.durable(), stopped]);
    } finally {
      this.held.delete(giveUp);
    }
    await this.outbox.whenBelow(this.o.backlogChars, this.o.backlogWaitMs);
  }

  /** Hermod is stopping: held producers go on now; waits for the journal end after stopWaitMs. */
  stop(): void {
    this.outbox.releaseProducers();
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.gaveUp = true;
      for (const giveUp of [...this.held]) giveUp(new JournalNotDurable(this.o.stopWaitMs));
    }, this.o.stopWaitMs);
    this.timer.unref();
  }
}
