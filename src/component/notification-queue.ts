// Durable fan-out: each service event is recorded in the journal (once, with its recipient
// list), rendered into one stanza per recipient and queued in the outbox tagged with its journal
// position. The outbox confirms positions as the server takes them (barriers); the journal keeps
// the rest across restarts, and `restore` queues them again on start.

import type { Recipient, ServiceEvent } from '../pubsub/types.ts';
import type { JournalEvent, NotificationJournal } from './journal.ts';
import type { Outbox } from './outbox.ts';

export type Render = (event: ServiceEvent, recipients: Recipient[]) => string[];

export class NotificationQueue {
  constructor(
    private readonly outbox: Outbox,
    private readonly journal: NotificationJournal,
    private readonly render: Render,
  ) {}

  /** Records and queues one event's notifications; returns how many stanzas were queued. */
  notify(event: ServiceEvent, recipients: Recipient[]): number {
    const stanzas = this.render(event, recipients);
    const seq = this.journal.append(event, recipients);
    this.outbox.push(stanzas, { seq, firstIndex: 0 });
    return stanzas.length;
  }

  /** Queues again what the journal holds undelivered (after a restart); returns the stanza count. */
  restore(events: JournalEvent[]): number {
    let count = 0;
    for (const { seq, event, recipients, pending } of events) {
      // Consecutive runs of pending recipients keep the outbox's tags contiguous.
      for (let i = 0; i < pending.length; ) {
        let j = i + 1;
        while (j < pending.length && pending[j] === (pending[i] as number) + (j - i)) j++;
        const first = pending[i] as number;
        const stanzas = this.render(event, recipients.slice(first, first + (j - i)));
        this.outbox.push(stanzas, { seq, firstIndex: first });
        count += stanzas.length;
        i = j;
      }
    }
    return count;
  }
}
