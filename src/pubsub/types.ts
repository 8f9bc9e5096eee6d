// The pub/sub domain model (XEP-0060 concepts, no wire format). Everything the core, the stores
// and the XMPP layer exchange is typed here. JIDs are plain strings, already validated and
// normalised at the edge; payloads are opaque strings the core never parses.

export const AFFILIATIONS = ['owner', 'publisher', 'publish-only', 'member', 'none', 'outcast'] as const;
export type Affiliation = (typeof AFFILIATIONS)[number];

export const ACCESS_MODELS = ['open', 'whitelist'] as const;
export type AccessModel = (typeof ACCESS_MODELS)[number];

export const PUBLISH_MODELS = ['publishers', 'subscribers', 'open'] as const;
export type PublishModel = (typeof PUBLISH_MODELS)[number];

export type SubscriptionState = 'subscribed' | 'pending' | 'unconfigured' | 'none';

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
  title: string;
  description: string;
  type: string;
}

export interface NodeRecord {
  id: string;
  config: NodeConfig;
  creator: string;
  /** Creation time, ms since epoch. */
  created: number;
}

export interface Subscription {
  node: string;
  /** The subscribed JID (bare or full) exactly as requested. */
  jid: string;
  subid: string;
  state: SubscriptionState;
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

/** Something the service tells subscribers about; the notifier turns it into stanzas. */
export type ServiceEvent =
  | { kind: 'items'; node: string; item: Item; withPayload: boolean }
  | { kind: 'retract'; node: string; itemIds: string[] }
  | { kind: 'purge'; node: string }
  | { kind: 'delete'; node: string }
  | { kind: 'config'; node: string }
  | { kind: 'subscription'; node: string; subscription: Subscription };

export interface Recipient {
  jid: string;
  subid: string;
}

/** Injected by the host: delivers one event to the given recipients. Must not throw. */
export type Notifier = (event: ServiceEvent, recipients: Recipient[]) => void;
