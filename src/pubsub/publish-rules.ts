// What a publish request must carry on a node, by its event type (XEP-0060 §4.3 table and
// §7.1.3.7), and the pubsub#publish_node_full policy (§7.1.2.5, §7.1.3.4). The service calls
// these; they know nothing of the wire.

import type { Store } from '../store/store.ts';
import { fail } from './errors.ts';
import type { NodeConfig } from './types.ts';

/** The <item/> of a publish request as the wire layer read it (absent: no <item/> at all). */
export type PublishedItem = { id?: string; payload?: string } | undefined;

/** A transient notification-only node: items are neither kept nor delivered (§4.3). */
export function isNotificationOnlyTransient(config: Pick<NodeConfig, 'persistItems' | 'deliverPayloads'>): boolean {
  return !config.persistItems && !config.deliverPayloads;
}

/**
 * Checks a publish against the node's event type (§4.3, §7.1.3.7). Throws:
 * - item-forbidden: any <item/> (even empty) on a transient notification-only node;
 * - item-required: no <item/> on a persistent node;
 * - payload-required: no payload on a node that delivers payloads.
 * A persistent notification-only node takes an item with or without a payload.
 */
export function checkPublishShape(config: Pick<NodeConfig, 'persistItems' | 'deliverPayloads'>, item: PublishedItem): void {
  if (isNotificationOnlyTransient(config)) {
    if (item) fail('item-forbidden', 'the node is transient and notification-only (pubsub#persist_items=0, pubsub#deliver_payloads=0): publish without an <item/>');
    return;
  }
  if (!item && config.persistItems) fail('item-required', 'the node persists items (pubsub#persist_items=1): the publish needs an <item/>');
  if (!item?.payload && config.deliverPayloads) fail('payload-required', 'the node delivers payloads (pubsub#deliver_payloads=1): the <item/> needs a payload');
}

/**
 * §7.1.3.4: with pubsub#publish_node_full 'reject', a new item on a node that holds `keep`
 * items already is conflict + node-full; republishing an existing id is not a new item. The
 * other policies remove the oldest item (the store does, without notification). A NodeRoom
 * follows the count over the requests of one publish batch, in order (PubsubService.publishMany).
 */
export class NodeRoom {
  private constructor(
    private count: number,
    private readonly present: Set<string>,
    private readonly keep: number,
  ) {}

  /**
   * The room of `node` for these requests; undefined when nothing can be refused (another
   * policy, or nothing kept). Reads the item count and which of the requests' ids are stored.
   */
  static async of(store: Store, node: string, config: Pick<NodeConfig, 'publishNodeFull'>, keep: number, requests: Array<{ item?: PublishedItem }>): Promise<NodeRoom | undefined> {
    if (config.publishNodeFull !== 'reject' || keep === 0) return undefined;
    const count = await store.countItems(node);
    const ids = [...new Set(requests.flatMap((r) => (r.item?.id ? [r.item.id] : [])))];
    const present = count >= keep - requests.length && ids.length > 0 ? (await store.getItems(node, { ids })).map((i) => i.id) : [];
    return new NodeRoom(count, new Set(present), keep);
  }

  /** Takes one more publication of `itemId` (undefined: a new generated id). Errors: `node-full`. */
  admit(itemId: string | undefined): void {
    if (itemId !== undefined && this.present.has(itemId)) return;
    if (this.count >= this.keep) fail('node-full', `the node holds its pubsub#max_items of ${this.keep} items and pubsub#publish_node_full is 'reject': retract an item first`);
    this.count += 1;
    if (itemId !== undefined) this.present.add(itemId);
  }
}
