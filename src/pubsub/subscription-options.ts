// Subscription options (XEP-0060 §6.3) as typed values: defaults, validation of a change, and
// equality (multi-subscribe tells subscriptions apart by their options). No wire format.

import { fail } from './errors.ts';
import type { Subscription, SubscriptionOptions } from './types.ts';

export const DEFAULT_SUBSCRIPTION_OPTIONS: Readonly<SubscriptionOptions> = Object.freeze({ deliver: true, subscriptionType: 'items' });

export function optionsOf(sub: Subscription): SubscriptionOptions {
  return { ...DEFAULT_SUBSCRIPTION_OPTIONS, ...sub.options };
}

/** Merges a change into options; a lease that already ended is invalid-options. */
export function applySubscriptionOptions(base: SubscriptionOptions, change: Partial<SubscriptionOptions>, now: number): SubscriptionOptions {
  const next: SubscriptionOptions = { ...base, ...change };
  if ('expire' in change && change.expire === undefined) delete next.expire;
  if (next.subscriptionType !== 'items') fail('invalid-options', 'pubsub#subscription_type must be items (this service has no collections)');
  if (next.expire !== undefined && (!Number.isFinite(next.expire) || next.expire <= now)) fail('invalid-options', 'pubsub#expire must be in the future');
  return next;
}

export function sameOptions(a: SubscriptionOptions, b: SubscriptionOptions): boolean {
  return a.deliver === b.deliver && a.expire === b.expire && a.subscriptionType === b.subscriptionType;
}
