// Node configuration defaults and validation (pure). The XMPP form mapping lives in
// src/xmpp/node-config-form.ts; this module only knows the typed NodeConfig.

import { fail } from './errors.ts';
import { ACCESS_MODELS, NOTIFICATION_TYPES, PUBLISH_MODELS, SEND_LAST_PUBLISHED_ITEM, type NodeConfig } from './types.ts';

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
  sendLastPublishedItem: 'on_sub',
  rosterGroupsAllowed: [],
  presenceBasedDelivery: false,
  title: '',
  description: '',
  type: '',
});

/** Merge a partial change into a config, validating every value. Throws not-acceptable. */
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
  return next;
}

/** How many items a node keeps. */
export function itemLimit(config: NodeConfig): number {
  if (!config.persistItems) return 0;
  return config.maxItems === 'max' ? MAX_ITEMS_LIMIT : config.maxItems;
}
