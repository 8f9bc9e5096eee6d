// Node configuration defaults and validation (pure). The XMPP form mapping lives in
// src/xmpp/node-config-form.ts; this module only knows the typed NodeConfig.

import { fail } from './errors.ts';
import { ACCESS_MODELS, PUBLISH_MODELS, type NodeConfig } from './types.ts';

/** Upper bound for `max_items` = 'max' and for any numeric value. */
export const MAX_ITEMS_LIMIT = 1_000_000;

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
  return next;
}

/** How many items a node keeps. */
export function itemLimit(config: NodeConfig): number {
  if (!config.persistItems) return 0;
  return config.maxItems === 'max' ? MAX_ITEMS_LIMIT : config.maxItems;
}
