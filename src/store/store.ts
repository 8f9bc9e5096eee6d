// The Store interface: durable state of the pub/sub service. Every backend (memory for unit
// tests, LevelDB embedded by default, CouchDB later) implements it and passes the same contract
// suite (test/unit/store-contract.ts). A write resolves only once it is durable for the backend.
// Stores hold no policy: limits, permissions and notifications are the service's job.

import type { Affiliation, Item, NodeRecord, Subscription } from '../pubsub/types.ts';

export interface ItemQuery {
  /** Only these ids (in publication order; missing ones are skipped). */
  ids?: string[];
  /** The `max` most recent items (still returned oldest first). */
  max?: number;
}

export interface Store {
  open(): Promise<void>;
  close(): Promise<void>;

  getNode(id: string): Promise<NodeRecord | undefined>;
  listNodes(): Promise<NodeRecord[]>;
  /** Create or update a node record. */
  putNode(node: NodeRecord): Promise<void>;
  /** Delete a node with all of its items, affiliations and subscriptions. */
  deleteNode(id: string): Promise<void>;

  getAffiliations(node: string): Promise<Map<string, Affiliation>>;
  /** Affiliations of one bare JID over all nodes. */
  getAffiliationsOf(jid: string): Promise<Array<{ node: string; affiliation: Affiliation }>>;
  /** `none` removes the stored affiliation. */
  setAffiliation(node: string, jid: string, affiliation: Affiliation): Promise<void>;

  getSubscriptions(node: string): Promise<Subscription[]>;
  /** Subscriptions whose JID has this bare JID (any resource), over all nodes. */
  getSubscriptionsOf(bareJid: string): Promise<Subscription[]>;
  putSubscription(sub: Subscription): Promise<void>;
  deleteSubscription(node: string, jid: string, subid: string): Promise<void>;

  /**
   * Store an item (replacing one with the same id, which then counts as newest) and drop the
   * oldest items beyond `keep`. Returns the ids dropped.
   */
  putItem(node: string, item: Item, keep: number): Promise<string[]>;
  getItems(node: string, query?: ItemQuery): Promise<Item[]>;
  countItems(node: string): Promise<number>;
  /** Returns true if an item was deleted. */
  deleteItem(node: string, id: string): Promise<boolean>;
  /** Drop the oldest items beyond `keep`; returns the ids dropped. */
  trimItems(node: string, keep: number): Promise<string[]>;
  purgeItems(node: string): Promise<void>;
}

export function bareJid(jid: string): string {
  const slash = jid.indexOf('/');
  return slash === -1 ? jid : jid.slice(0, slash);
}
