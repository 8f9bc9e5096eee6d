// Node configuration defaults and validation (pure). The XMPP form mapping lives in
// src/xmpp/node-config-form.ts; this module only knows the typed NodeConfig.

import { fail } from './errors.ts';
import { ACCESS_MODELS, NOTIFICATION_TYPES, PUBLISH_MODELS, PUBLISH_NODE_FULL, SEND_LAST_PUBLISHED_ITEM, type NodeConfig } from './types.ts';

/** Upper bound for `max_items` = 'max' and for any numeric value. */
export const MAX_ITEMS_LIMIT = 1_000_000;
/** Upper bound for pubsub#max_payload_size (bytes). */
export const MAX_PAYLOAD_LIMIT = 1_048_576;
/** Upper bound for pubsub#item_expire (seconds): ten years. */
export const ITEM_EXPIRE_LIMIT = 10 * 366 * 24 * 3600;

export const DEFAULT_NODE_CONFIG: Readonly<NodeConfig> = Object.freeze({
  accessModel: 'open',
  publishModel: 'publishers',
  maxItems: 'max',
  persistItems: true,
  deliverPayloads: true,
  deliverNotifications: true,
  notifyRetract: true,
  notifyDelete: true,
  notifyConfig: false,
  notifySub: false,
  maxPayloadSize: 65_536,
  notificationType: 'headline',
  itemExpire: 'max',
  // XEP-0060 §4.3: a service that supports (and advertises) last-published MUST default to on_sub_and_presence.
  sendLastPublishedItem: 'on_sub_and_presence',
  rosterGroupsAllowed: [],
  presenceBasedDelivery: false,
  title: '',
  description: '',
  type: '',
  contact: [],
  language: '',
  bodyXslt: '',
  dataformXslt: '',
  itemReply: 'publisher',
  nodeType: 'leaf',
  collection: [],
  children: [],
  childrenAssociationPolicy: 'owners',
  childrenAssociationWhitelist: [],
  childrenMax: 0,
  subscribe: true,
  tempsub: false,
  purgeOffline: false,
  publishNodeFull: 'retract-oldest',
});

/**
 * Registered fields with values this service does not implement: for each, which values it
 * honours and why the others are refused. One table, so that create, configure and the
 * defaults all refuse the same things with the same words.
 */
type Honoured<K extends keyof NodeConfig> = { field: string; honours(value: NodeConfig[K]): boolean; why: string };
const HONOURED: { [K in keyof NodeConfig]?: Honoured<K> } = {
  nodeType: { field: 'pubsub#node_type', honours: (v) => v === 'leaf', why: 'this service has leaf nodes only (XEP-0248 collections are not implemented)' },
  collection: { field: 'pubsub#collection', honours: (v) => v.length === 0, why: 'there are no collection nodes to put a node in (XEP-0248 is not implemented)' },
  children: { field: 'pubsub#children', honours: (v) => v.length === 0, why: 'a leaf node has no children (XEP-0248 collections are not implemented)' },
  childrenAssociationPolicy: {
    field: 'pubsub#children_association_policy',
    honours: (v) => v === 'owners',
    why: "nodes cannot be associated with a leaf node: only 'owners' (who cannot either) describes it",
  },
  childrenAssociationWhitelist: { field: 'pubsub#children_association_whitelist', honours: (v) => v.length === 0, why: 'nodes cannot be associated with a leaf node' },
  childrenMax: { field: 'pubsub#children_max', honours: (v) => v === 0, why: 'a leaf node has no children' },
  itemReply: { field: 'pubsub#itemreply', honours: (v) => v === 'publisher', why: "items and notifications always carry the 'publisher' attribute" },
  tempsub: { field: 'pubsub#tempsub', honours: (v) => !v, why: 'presence-bound temporary subscriptions are not implemented' },
  purgeOffline: { field: 'pubsub#purge_offline', honours: (v) => !v, why: 'purging items when the publisher goes offline is not implemented' },
};

/** A value as the data form shows it (booleans 1/0, lists joined). */
const shown = (value: unknown): string => (Array.isArray(value) ? value.join(', ') : typeof value === 'boolean' ? (value ? '1' : '0') : String(value));

/** Refuses (not-acceptable, naming field and value) a registered value the service cannot honour. */
function checkHonoured(config: NodeConfig): void {
  for (const [key, rule] of Object.entries(HONOURED) as Array<[keyof NodeConfig, Honoured<keyof NodeConfig>]>) {
    const value = config[key];
    if (!rule.honours(value)) fail('not-acceptable', `${rule.field} '${shown(value)}' is not supported: ${rule.why}`);
  }
}

/** BCP 47 language tag (RFC 5646 §2.1, syntax only). */
const LANGUAGE_TAG = /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/;

/**
 * Merges a partial change into a config, validating every value: not-acceptable with a text
 * naming the field and the value for anything out of range or not honoured by this service.
 */
export function applyConfig(base: NodeConfig, change: Partial<NodeConfig>): NodeConfig {
  const next: NodeConfig = { ...base, ...change };
  if (!(ACCESS_MODELS as readonly string[]).includes(next.accessModel)) {
    fail('not-acceptable', `pubsub#access_model '${next.accessModel}' is not supported (supported: ${ACCESS_MODELS.join(', ')})`);
  }
  if (!(PUBLISH_MODELS as readonly string[]).includes(next.publishModel)) {
    fail('not-acceptable', `pubsub#publish_model '${next.publishModel}' is not supported (supported: ${PUBLISH_MODELS.join(', ')})`);
  }
  if (next.maxItems !== 'max' && (!Number.isInteger(next.maxItems) || next.maxItems < 0 || next.maxItems > MAX_ITEMS_LIMIT)) {
    fail('not-acceptable', `pubsub#max_items must be an integer from 0 to ${MAX_ITEMS_LIMIT} or 'max'`);
  }
  if (!Number.isInteger(next.maxPayloadSize) || next.maxPayloadSize < 1 || next.maxPayloadSize > MAX_PAYLOAD_LIMIT) {
    fail('not-acceptable', `pubsub#max_payload_size must be an integer from 1 to ${MAX_PAYLOAD_LIMIT}`);
  }
  if (!(NOTIFICATION_TYPES as readonly string[]).includes(next.notificationType)) {
    fail('not-acceptable', `pubsub#notification_type must be one of ${NOTIFICATION_TYPES.join(', ')}`);
  }
  if (next.itemExpire !== 'max' && (!Number.isInteger(next.itemExpire) || next.itemExpire < 1 || next.itemExpire > ITEM_EXPIRE_LIMIT)) {
    fail('not-acceptable', `pubsub#item_expire must be a number of seconds from 1 to ${ITEM_EXPIRE_LIMIT} or 'max'`);
  }
  if (!(SEND_LAST_PUBLISHED_ITEM as readonly string[]).includes(next.sendLastPublishedItem)) {
    fail('not-acceptable', `pubsub#send_last_published_item must be one of ${SEND_LAST_PUBLISHED_ITEM.join(', ')}`);
  }
  if (!(PUBLISH_NODE_FULL as readonly string[]).includes(next.publishNodeFull)) {
    fail('not-acceptable', `pubsub#publish_node_full must be one of ${PUBLISH_NODE_FULL.join(', ')}`);
  }
  if (next.language !== '' && !LANGUAGE_TAG.test(next.language)) fail('not-acceptable', `pubsub#language '${next.language}' is not a language tag (e.g. en, de-CH)`);
  checkHonoured(next);
  return next;
}

/** How many items a node keeps. */
export function itemLimit(config: NodeConfig): number {
  if (!config.persistItems) return 0;
  return config.maxItems === 'max' ? MAX_ITEMS_LIMIT : config.maxItems;
}
