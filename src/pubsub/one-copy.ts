// One copy of an item published to several nodes: Hermod's subscription option
// `{urn:hermod:pubsub:0}one_copy`. An Ajatus document in two tags is published to both tags'
// nodes as the same item (id and payload), and a partner following both nodes received it twice
// — a fifth more for the XMPP servers to carry and the partner to parse when every fourth
// document is in two tags. A subscription with the option on says: an item whose payload this
// JID was just sent through another of its subscriptions that has the option on may come without
// it. So the service remembers, for recent publications, which JIDs were sent an item's payload
// that way; a publication of the same id and payload to another node reaches those JIDs' one-copy
// subscriptions as a notification without payload (XEP-0060 §7.1.2.2's form: the item id, and
// the archive id as on every notification), which moves the subscriber's place in that node as
// usual. Every other subscriber, and every notification of the first node, is as before.
// The memory is this process's and bounded (oldest forgotten first): forgetting only sends a
// payload once more, never less. A subscriber that gets a notification without payload and has
// not seen the payload (it lost it, or the first notification is still on its way) fetches the
// item (§6.5.8) as XEP-0060 says; Hermod's partners wait a moment for the first one first.

import { LRUCache } from 'lru-cache';
import type { Item, Recipient } from './types.ts';

/** Characters of payload the ledger remembers by default (payload strings are shared with the items, not copied). */
export const ONE_COPY_MEMORY_CHARS = 4 * 1024 * 1024;

interface Sent {
  /** The node whose notification carried the payload. */
  node: string;
  payload: string;
  /** JIDs (as their subscriptions name them) sent the payload through a one-copy subscription. */
  jids: Set<string>;
}

export class OneCopyLedger {
  private readonly sent: LRUCache<string, Sent>;

  constructor(maxChars = ONE_COPY_MEMORY_CHARS) {
    this.sent = new LRUCache<string, Sent>({ maxSize: maxChars, sizeCalculation: (s) => s.payload.length + 64 + 64 * s.jids.size });
  }

  /**
   * Splits the recipients of the publication of `item` on `node` (once its write is done) into
   * those who get it with its payload (`full`) and those who get it without (`stubs`: one-copy
   * recipients that were sent this id with this very payload through another node's
   * notification). Remembers the one-copy recipients of `full` as sent this payload. Recipients
   * without `oneCopy` are always in `full`; the order of each list is that of `recipients`.
   */
  split(node: string, item: Item, recipients: readonly Recipient[]): { full: Recipient[]; stubs: Recipient[] } {
    let any = false;
    for (const r of recipients) if (r.oneCopy) any = true;
    if (!any || item.payload === '') return { full: recipients as Recipient[], stubs: [] };
    const known = this.sent.get(item.id);
    const other = known !== undefined && known.node !== node && known.payload === item.payload ? known : undefined;
    const full: Recipient[] = [];
    const stubs: Recipient[] = [];
    for (const r of recipients) {
      if (r.oneCopy && other?.jids.has(r.jid)) stubs.push(r);
      else full.push(r);
    }
    // What this notification sends with its payload: added to the earlier node's record, or a
    // record of its own (a new payload, or nothing remembered).
    const record: Sent = other ?? { node, payload: item.payload, jids: new Set() };
    let added = false;
    for (const r of full) {
      if (r.oneCopy && !record.jids.has(r.jid)) {
        record.jids.add(r.jid);
        added = true;
      }
    }
    if (record !== other || added) this.sent.set(item.id, record);
    return { full, stubs };
  }
}
