// What each of replication's publishes waits for before its source may record it: the journal
// holding its notifications (a kill -9 after the record must not lose them), and the outbox not
// holding more than a bound of unwritten notifications (a source must not outrun the server, nor
// fill the outbox while the server is down: Outbox.whenBelow). Both waits can be long when
// something is down: the journal retries a store that refuses writes for as long as Hermod runs,
// and the outbox holds producers until the server is back. A stop must not wait on them, or the
// sources (which wait for their batch) could not stop, and the journal (closed after them) would
// never give up. So, once stop() is called:
// - a wait for the journal ends after `stopWaitMs` with JournalNotDurable (each wait its own
//   bound, counted from the stop or from its start: a journal that is fine answers at once);
// - the outbox lets producers go on while connected, and refuses them (ProducerStopped) while
//   not, so that nothing more piles up behind a server that is down.
// A batch that ends so is not recorded by its source and is published again at the next start
// (at least once).

import type { NotificationJournal } from '../component/journal.ts';
import type { Outbox } from '../component/outbox.ts';

export interface PublishGateOptions {
  /** Most characters of notifications unwritten in the outbox before a publish waits. */
  backlogChars: number;
  /** Longest such wait while connected (ms). */
  backlogWaitMs: number;
  /** How long, once stopping, one wait for the journal may take (ms). */
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
  /** Waits for the journal begun before the stop: ended by the stop's timer. */
  private readonly held = new Set<(err: Error) => void>();
  private stopping = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly journal: Pick<NotificationJournal, 'durable'>,
    private readonly outbox: Pick<Outbox, 'whenBelow' | 'stopProducers'>,
    private readonly o: PublishGateOptions,
  ) {}

  /**
   * Resolves once what was published so far is in the journal and the outbox's backlog is below
   * its bound (see the head comment). Rejects, once stopping, with JournalNotDurable or the
   * outbox's ProducerStopped; with the journal's own error when it was closed without the writes.
   */
  async passed(): Promise<void> {
    let giveUp: (err: Error) => void = () => undefined;
    const stopped = new Promise<never>((_, reject) => (giveUp = reject));
    let own: NodeJS.Timeout | undefined;
    if (this.stopping) {
      own = setTimeout(() => giveUp(new JournalNotDurable(this.o.stopWaitMs)), this.o.stopWaitMs);
      own.unref();
    } else this.held.add(giveUp);
    try {
      await Promise.race([this.journal.durable(), stopped]);
    } finally {
      this.held.delete(giveUp);
      clearTimeout(own);
    }
    await this.outbox.whenBelow(this.o.backlogChars, this.o.backlogWaitMs);
  }

  /** Hermod is stopping (see the head comment). Idempotent. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.outbox.stopProducers();
    const held = [...this.held];
    this.held.clear();
    this.timer = setTimeout(() => {
      for (const giveUp of held) giveUp(new JournalNotDurable(this.o.stopWaitMs));
    }, this.o.stopWaitMs);
    this.timer.unref();
  }
}
