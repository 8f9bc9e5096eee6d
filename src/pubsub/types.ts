// The pub/sub domain model (XEP-0060 concepts, no wire format). Everything the core, the stores
// and the XMPP layer exchange is typed here. JIDs are plain strings, already validated and
// normalised at the edge; payloads are opaque strings the core never parses.

export const AFFILIATIONS = ['owner', 'publisher', 'publish-only', 'member', 'none', 'outcast'] as const;
export type Affiliation = (typeof AFFILIATIONS)[number];

/** presence and roster need the owners' rosters (XEP-0356 privileges: see RosterSource in access.ts). */
export const ACCESS_MODELS = ['open', 'authorize', 'whitelist', 'presence', 'roster'] as const;
export type AccessModel = (typeof ACCESS_MODELS)[number];

export const PUBLISH_MODELS = ['publishers', 'subscribers', 'open'] as const;
export type PublishModel = (typeof PUBLISH_MODELS)[number];

export type SubscriptionState = 'subscribed' | 'pending' | 'unconfigured' | 'none';

export const SEND_LAST_PUBLISHED_ITEM = ['never', 'on_sub', 'on_sub_and_presence'] as const;
export type SendLastPublishedItem = (typeof SEND_LAST_PUBLISHED_ITEM)[number];

export const NOTIFICATION_TYPES = ['headline', 'normal'] as const;
export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

/*
 * Registered values (XEP-0060 §16.4.3, XEP-0248) of fields whose every value this service does
 * not implement: the types hold what a client may send, node-config.ts refuses what Hermod
 * cannot honour.
 */
export const NODE_TYPES = ['leaf', 'collection'] as const;
export type NodeType = (typeof NODE_TYPES)[number];

export const ITEM_REPLY = ['owner', 'publisher', 'none'] as const;
export type ItemReply = (typeof ITEM_REPLY)[number];

export const PUBLISH_NODE_FULL = ['retract-oldest', 'discard-oldest', 'reject'] as const;
export type PublishNodeFull = (typeof PUBLISH_NODE_FULL)[number];

export const CHILDREN_ASSOCIATION_POLICIES = ['all', 'owners', 'whitelist'] as const;
export type ChildrenAssociationPolicy = (typeof CHILDREN_ASSOCIATION_POLICIES)[number];

/** Node configuration (pubsub#node_config). `maxItems` of 'max' means as many as the service allows. */
export interface NodeConfig {
  accessModel: AccessModel;
  publishModel: PublishModel;
  maxItems: number | 'max';
  persistItems: boolean;
  deliverPayloads: boolean;
  deliverNotifications: boolean;
  notifyRetract: boolean;
  notifyDelete: boolean;
  notifyConfig: boolean;
  /** Tell owners when a subscription is created, changed or ended. */
  notifySub: boolean;
  /** Largest payload accepted, in bytes of its serialized form. */
  maxPayloadSize: number;
  /** Message type of notifications. */
  notificationType: NotificationType;
  /** Seconds after publication when an item is removed; 'max': never. */
  itemExpire: number | 'max';
  /** Send the newest item to a new subscriber (with a XEP-0203 delay stamp); on_sub_and_presence: also when it becomes available. */
  sendLastPublishedItem: SendLastPublishedItem;
  /** Roster access model: the owners' roster groups whose contacts may subscribe. */
  rosterGroupsAllowed: string[];
  /** Notify only subscribers that are available (presence known to the service). */
  presenceBasedDelivery: boolean;
  title: string;
  description: string;
  type: string;
  /** pubsub#contact: bare or full JIDs to ask about the node (metadata only). */
  contact: string[];
  /** pubsub#language: the node's default language, a BCP 47 tag or '' (metadata only). */
  language: string;
  /** pubsub#body_xslt: URL of an XSLT making a message body from a payload (stored, not applied). */
  bodyXslt: string;
  /** pubsub#dataform_xslt: URL of an XSLT making a data form from a payload (stored, not applied). */
  dataformXslt: string;
  /** pubsub#itemreply: who replies go to; Hermod always stamps the publisher (only 'publisher'). */
  itemReply: ItemReply;
  /** pubsub#node_type: only 'leaf' (no XEP-0248 collections). */
  nodeType: NodeType;
  /** pubsub#collection: the collections the node is in; always empty here. */
  collection: string[];
  /** pubsub#children: child nodes; always empty (leaf). */
  children: string[];
  /** pubsub#children_association_policy: only 'owners' (nobody can associate children with a leaf). */
  childrenAssociationPolicy: ChildrenAssociationPolicy;
  /** pubsub#children_association_whitelist: always empty. */
  childrenAssociationWhitelist: string[];
  /** pubsub#children_max: always 0 (a leaf has no children). */
  childrenMax: number | 'max';
  /**
   * pubsub#subscribe: whether entities may subscribe (false: requests are refused, §6.1.3.11;
   * existing subscriptions and those an owner sets stay).
   */
  subscribe: boolean;
  /** pubsub#tempsub: presence-bound temporary subscriptions; only false. */
  tempsub: boolean;
  /** pubsub#purge_offline: purge when the publisher goes offline; only false. */
  purgeOffline: boolean;
  /** pubsub#publish_node_full (§7.1.2.5): what a publish to a full node does. */
  publishNodeFull: PublishNodeFull;
}

export interface NodeRecord {
  id: string;
  config: NodeConfig;
  creator: string;
  /** Creation time, ms since epoch. */
  created: number;
}

/** Subscription options (§6.3, pubsub#subscribe_options). */
export interface SubscriptionOptions {
  /** pubsub#deliver: false pauses notifications without ending the subscription. */
  deliver: boolean;
  /** pubsub#expire: when a leased subscription ends, ms since epoch; absent: never. */
  expire?: number;
  /** pubsub#subscription_type: only 'items' (no collections). */
  subscriptionType: 'items';
  /**
   * pubsub#digest: item notifications (publications and retractions) are aggregated. The first
   * after a quiet period goes out at once; those within `digestFrequency` of it are sent together,
   * as one message, when that interval ends. Absent: off.
   */
  digest?: boolean;
  /** pubsub#digest_frequency: the least milliseconds between two digests (with `digest`). */
  digestFrequency?: number;
  /**
   * Hermod's `{urn:hermod:pubsub:0}one_copy`: an item published to several nodes (the same id
   * and payload) reaches this JID's subscriptions that have it on with its payload once; the
   * others get a notification without payload (see src/pubsub/one-copy.ts). Absent: off.
   */
  oneCopy?: boolean;
  /**
   * Hermod's `{urn:hermod:pubsub:0}packed`: item payloads in notifications to this JID travel
   * as base64 text, the item's only content, instead of as XML (src/xmpp/packed.ts): the servers
   * carrying them parse one text node instead of every element, attribute and entity of the
   * payload. Absent: off.
   */
  packed?: boolean;
}

export interface Subscription {
  node: string;
  /** The subscribed JID (bare or full) exactly as requested. */
  jid: string;
  subid: string;
  state: SubscriptionState;
  /** Absent: the defaults (DEFAULT_SUBSCRIPTION_OPTIONS). */
  options?: SubscriptionOptions;
}

export interface Item {
  id: string;
  /** Serialized payload (one XML element in the XMPP layer); empty string for no payload. */
  payload: string;
  /** Bare JID of the entity that published the item. */
  publisher: string;
  /** Publication time, ms since epoch. */
  published: number;
}

/**
 * One entry of a node's history (XEP-0313 on pub/sub, XEP-0442): a publication, or a tombstone
 * for retracted (or expired) items or a purge, so that a subscriber who was away learns both.
 */
export interface ArchiveEntry {
  /** Unique in the node's archive and never reused; orders as the archive does. */
  id: string;
  /** When it happened, ms since epoch. */
  stamp: number;
  item?: Item;
  retracted?: string[];
  purged?: boolean;
}

/** Something the service tells subscribers about; the notifier turns it into stanzas. */
export type ServiceEvent = (
  /** `item` absent: a publish to a transient notification-only node (§4.3: an empty <items/>). */
  | { kind: 'items'; node: string; item?: Item; withPayload: boolean; /** Sent late (last published item): stamp it. */ delayed?: boolean }
  | { kind: 'retract'; node: string; itemIds: string[] }
  | { kind: 'purge'; node: string }
  /** `redirect`: the URI of a replacement node given by the owner (§8.4.1). */
  | { kind: 'delete'; node: string; redirect?: string }
  /** `config`: the new configuration, sent when the node delivers payloads (§8.2.5.3). */
  | { kind: 'config'; node: string; config?: NodeConfig }
  | { kind: 'subscription'; node: string; subscription: Subscription }
  /** §8.9.4: an owner changed the affiliation of `jid` (the recipient) with the node. */
  | { kind: 'affiliation'; node: string; jid: string; affiliation: Affiliation }
  /** §8.6: ask the owners (the recipients) to approve or deny a pending subscription. */
  | { kind: 'authorization'; node: string; subscription: Subscription }
  /**
   * Item notifications of one node aggregated for a digest subscriber (pubsub#digest): the
   * publications and retractions in publish order, sent as one <items/> (see
   * src/component/digest.ts).
   */
  | { kind: 'digest'; node: string; events: DigestPart[] }
) & {
  /** The node's pubsub#notification_type (headline when absent). */
  messageType?: NotificationType;
  /**
   * The id of the node's archive entry (XEP-0313) this event made: items, retract and purge
   * events of a persistent node. Sent as an XEP-0359 stanza-id so a subscriber can resume the
   * node's history from what it received live.
   */
  archiveId?: string;
};

/** One publication or retraction in a digest. */
export type DigestPart = { item: Item; withPayload: boolean } | { retract: string[] };

export interface Recipient {
  jid: string;
  subid: string;
  /**
   * Set when the subscription(s) this notification is for asked for digests (pubsub#digest):
   * pubsub#digest_frequency, in ms. Item notifications to it are aggregated by the notification
   * queue.
   */
  digestMs?: number;
  /**
   * Set when the JID holds several subscriptions to the node: the ones this notification is
   * for (sent once, with SHIM SubID headers).
   */
  subids?: string[];
  /** Set when every subscription this notification is for has `oneCopy` on (src/pubsub/one-copy.ts). */
  oneCopy?: true;
  /** Set when every subscription this notification is for has `packed` on: payloads go packed (src/xmpp/packed.ts). */
  packed?: true;
}

/** Injected by the host: delivers one event to the given recipients. Must not throw. */
export type Notifier = (event: ServiceEvent, recipients: Recipient[]) => void;
