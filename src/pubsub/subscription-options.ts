// Subscription options (XEP-0060 §6.3) as typed values: defaults, validation of a change, and
// equality (multi-subscribe tells subscriptions apart by their options). No wire format.

import { fail } from './errors.ts';
import type { Subscription, SubscriptionOptions } from './types.ts';

/** pubsub#digest_frequency when a subscriber turns digests on without one, in ms. */
export const DEFAULT_DIGEST_FREQUENCY_MS = 1000;
/**
 * Bounds of pubsub#digest_frequency, in ms: [10 ms, 1 min]. The upper bound is Hermod's, not the
 * XEP's: what a digest window holds keeps the notification journal's marks back for every
 * recipient (src/component/notification-queue.ts), so a window of hours would hold the journal
 * (memory, store, and what a crash sends again) for hours.
 */
export const MIN_DIGEST_FREQUENCY_MS = 10;
export const MAX_DIGEST_FREQUENCY_MS = 60 * 1000;

/**
 * The digest interval (ms) of a subscription with pubsub#digest on, else undefined (one
 * notification per item).
 */
export function digestMsOf(options: SubscriptionOptions | undefined): number | undefined {
  return options?.digest === true ? (options.digestFrequency ?? DEFAULT_DIGEST_FREQUENCY_MS) : undefined;
}

export const DEFAULT_SUBSCRIPTION_OPTIONS: Readonly<SubscriptionOptions> = Object.freeze({ deliver: true, subscriptionType: 'items' });

export function optionsOf(sub: Subscription): SubscriptionOptions {
  return { ...DEFAULT_SUBSCRIPTION_OPTIONS, ...sub.options };
}

/**
 * Merges a change into options. Errors (invalid-options): a lease that already ended, a
 * pubsub#digest_frequency that is not a whole number of ms in [MIN_DIGEST_FREQUENCY_MS,
 * MAX_DIGEST_FREQUENCY_MS].
 */
export function applySubscriptionOptions(base: SubscriptionOptions, change: Partial<SubscriptionOptions>, now: number): SubscriptionOptions {
  const next: SubscriptionOptions = { ...base, ...change };
  if ('expire' in change && change.expire === undefined) delete next.expire;
  if (next.subscriptionType !== 'items') fail('invalid-options', 'pubsub#subscription_type must be items (this service has no collections)');
  if (next.expire !== undefined && (!Number.isFinite(next.expire) || next.expire <= now)) fail('invalid-options', 'pubsub#expire must be in the future');
  if (next.digest === false) delete next.digest;
  if (next.oneCopy === false) delete next.oneCopy;
  if (next.packed === false) delete next.packed;
  const f = next.digestFrequency;
  if (f !== undefined && (!Number.isInteger(f) || f < MIN_DIGEST_FREQUENCY_MS || f > MAX_DIGEST_FREQUENCY_MS)) {
    fail('invalid-options', `pubsub#digest_frequency must be a whole number of milliseconds from ${MIN_DIGEST_FREQUENCY_MS} to ${MAX_DIGEST_FREQUENCY_MS} (1 min) (got '${f}')`);
  }
  return next;
}

export function sameOptions(a: SubscriptionOptions, b: SubscriptionOptions): boolean {
  return a.deliver === b.deliver && a.expire === b.expire && a.subscriptionType === b.subscriptionType && digestMsOf(a) === digestMsOf(b) && (a.oneCopy === true) === (b.oneCopy === true) && (a.packed === true) === (b.packed === true);
}
