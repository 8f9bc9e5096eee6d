// Durable fan-out: each service event is recorded in the journal (once, with its recipient
// list), rendered into one stanza per recipient and queued in the outbox tagged with its journal
// position. The outbox confirms positions as the server takes them (barriers); the journal keeps
// the rest across restarts, and `restore` queues them again on start.
//
// Digests (pubsub#digest, src/component/digest.ts) are made here, between the journal and the
// outbox, because this is the one place where an aggregated message can keep the journal's
// guarantees without a second mechanism: the event is journalled as always (durable before the
// publish is answered) with every recipient, and a recipient whose notification a digest window
// takes is *held* in the journal (NotificationJournal.hold): the journal's confirmed and routed
// marks stop before the oldest held position, so a crash or restart replays it (and, at worst, a
// few notifications to others sent after it: at least once, same item ids). When the digest is
// due it is journalled as an event of its own (kind 'digest', one recipient) and queued like any
// other; its positions are released in the same turn, so the journal's store batch that records
// the digest is never later than the one that may delete the events it replaces. The journal
// records a digest by reference to those events (their payloads are stored once, however many
// digest subscribers a node has) and keeps them until the digest is confirmed. Aggregating in
// the service would need its own persistence; aggregating in the outbox would break its
// positional confirmation (a held stanza would sit between confirmed ones).

import type { Recipient, ServiceEvent } from '../pubsub/types.ts';
import { DigestWindows, digestible, type DigestLimits, type DueDigest } from './digest.ts';
import type { JournalEvent, NotificationJournal } from './journal.ts';
import type { Outbox } from './outbox.ts';

export type Render = (event: ServiceEvent, recipients: Recipient[]) => string[];

export class NotificationQueue {
  private readonly digests: DigestWindows;

  constructor(
    private readonly outbox: Outbox,
    private readonly journal: NotificationJournal,
    private readonly render: Render,
    digestLimits?: DigestLimits,
  ) {
    this.digests = new DigestWindows((due) => this.sendDigest(due), digestLimits);
  }

  /** Records and queues one event's notifications; returns how many stanzas were queued (held ones not counted). */
  notify(event: ServiceEvent, recipients: Recipient[]): number {
    const aggregated = digestible(event);
    if (!aggregated || !recipients.some((r) => r.digestMs !== undefined)) {
      // Nothing may overtake what digests of the node hold (a purge, a deletion, a late item), nor
      // an item what a recipient's window holds from before it turned digests off.
      if (!aggregated) this.digests.flushNode(event.node);
      else for (const recipient of recipients) this.digests.flushRecipient(event.node, recipient.jid);
      const stanzas = this.render(event, recipients);
      const seq = this.journal.append(event, recipients);
      this.outbox.push(stanzas, { seq, firstIndex: 0 });
      return stanzas.length;
    }
    const seq = this.journal.append(event, recipients);
    const now: number[] = [];
    for (let i = 0; i < recipients.length; i++) {
      const recipient = recipients[i] as Recipient;
      if (recipient.digestMs === undefined) {
        this.digests.flushRecipient(event.node, recipient.jid); // it turned digests off: what its windows hold goes first
        now.push(i);
        continue;
      }
      // Held before the window takes it: a window this one fills sends (and releases) at once.
      this.journal.hold(seq, i);
      if (!this.digests.hold(event, recipient, [seq, i])) {
        this.journal.release(seq, i);
        now.push(i);
      }
    }
    return this.queueRuns(event, recipients, seq, now);
  }

  /** Sends what digest windows hold and aggregates no more (a stop): later notifications go out one by one. */
  flushDigests(): void {
    this.digests.close();
  }

  /** Recipient positions held by digest windows. */
  get heldForDigests(): number {
    return this.digests.held;
  }

  /** Queues again what the journal holds undelivered (after a restart); returns the stanza count. */
  restore(events: JournalEvent[]): number {
    let count = 0;
    for (const { seq, event, recipients, pending } of events) count += this.queueRuns(event, recipients, seq, pending);
    return count;
  }

  /**
   * Queues the notifications of event `seq` to the recipients at `indexes` (ascending): rendered
   * together, queued in runs of consecutive indexes so the outbox's tags stay contiguous.
   */
  private queueRuns(event: ServiceEvent, recipients: Recipient[], seq: number, indexes: number[]): number {
    if (indexes.length === 0) return 0;
    const stanzas = this.render(event, indexes.length === recipients.length ? recipients : indexes.map((i) => recipients[i] as Recipient));
    for (let i = 0; i < indexes.length; ) {
      let j = i + 1;
      while (j < indexes.length && indexes[j] === (indexes[i] as number) + (j - i)) j++;
      this.outbox.push(stanzas.slice(i, j), { seq, firstIndex: indexes[i] as number });
      i = j;
    }
    return stanzas.length;
  }

  /** A digest is due: recorded as an event of its own, the positions it replaces released, queued. */
  private sendDigest({ event, recipient, held }: DueDigest): void {
    const seq = this.journal.appendDigest(event, recipient, held.map(([s]) => s));
    for (const [s, i] of held) this.journal.release(s, i);
    this.outbox.push(this.render(event, [recipient]), { seq, firstIndex: 0 });
  }
}
