// Service limits (pure decisions, no XMPP): the cap on a node's items, the number of nodes one
// owner may hold, and the publish rate per sender (a token bucket per bare JID). The service asks
// these functions and fails with a core error name; src/xmpp/errors.ts maps it to the wire.
// Admins (the component's own JID among them) are exempt from the node quota and the rate: the
// service decides who is an admin, this module only counts.

import { fail } from './errors.ts';
import { MAX_ITEMS_LIMIT } from './node-config.ts';
import type { NodeConfig } from './types.ts';

export interface PublishRate {
  /** Tokens added per second: the sustained publish rate. */
  perSecond: number;
  /** Bucket size: publishes a sender may make at once after being quiet. */
  burst: number;
}

export interface Limits {
  /** Cap on pubsub#max_items; 'max' means this many. At most MAX_ITEMS_LIMIT. */
  maxItemsPerNode: number;
  /** Nodes one bare JID may own (Infinity: no limit). */
  maxNodesPerOwner: number;
  /** Publish rate per sender; undefined: not limited. */
  publishRate: PublishRate | undefined;
}

/**
 * What a configured service uses unless told otherwise (the config file's defaults): a node keeps
 * at most as many items as its history does (ARCHIVE_LIMIT), a user owns at most 1 000 nodes,
 * and a sender may publish 10 000 items at once (seeding a node) but only 100 per second
 * sustained.
 */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxItemsPerNode: 100_000,
  maxNodesPerOwner: 1_000,
  publishRate: Object.freeze({ perSecond: 100, burst: 10_000 }),
});

/** A service constructed without limits (embedding, tests, benchmarks): only the hard bounds. */
export const NO_LIMITS: Readonly<Limits> = Object.freeze({ maxItemsPerNode: MAX_ITEMS_LIMIT, maxNodesPerOwner: Infinity, publishRate: undefined });

/** Refuses a pubsub#max_items above the service's cap (not-acceptable, naming the limit). */
export function checkMaxItems(maxItems: NodeConfig['maxItems'] | undefined, limits: Limits): void {
  if (typeof maxItems === 'number' && maxItems > limits.maxItemsPerNode) {
    fail('not-acceptable', `pubsub#max_items ${maxItems} is above this service's limit of ${limits.maxItemsPerNode} items per node`);
  }
}

/** How many items a node keeps: its max_items ('max': the cap), never above the cap. */
export function nodeItemLimit(config: NodeConfig, limits: Limits): number {
  if (!config.persistItems) return 0;
  return config.maxItems === 'max' ? limits.maxItemsPerNode : Math.min(config.maxItems, limits.maxItemsPerNode);
}

/** Refuses creating one more node when the owner already holds the most allowed. */
export function checkNodeQuota(owned: number, limits: Limits): void {
  if (owned >= limits.maxNodesPerOwner) {
    fail('max-nodes-exceeded', `you own ${owned} nodes, the most this service allows per owner (${limits.maxNodesPerOwner}): delete one first`);
  }
}

interface Bucket {
  tokens: number;
  /** When `tokens` was computed, ms. */
  at: number;
}

/**
 * Token buckets per key (bare JID). `take` spends one token and answers 0, or answers how many ms
 * until a token is there (nothing spent). Memory is bounded: buckets are kept in least recently
 * used order; one that has refilled completely is dropped (it equals a fresh one), and past
 * `maxKeys` the least recently used goes (that sender starts again from a full bucket).
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly refillMs: number;

  constructor(
    readonly rate: PublishRate,
    private readonly now: () => number = Date.now,
    private readonly maxKeys = 100_000,
  ) {
    if (!(rate.perSecond > 0) || !(rate.burst >= 1)) throw new RangeError('publish rate: perSecond must be > 0 and burst >= 1');
    this.refillMs = (rate.burst / rate.perSecond) * 1000;
  }

  /** Buckets held (for tests and status). */
  get size(): number {
    return this.buckets.size;
  }

  take(key: string): number {
    const now = this.now();
    this.evict(now);
    const { perSecond, burst } = this.rate;
    const known = this.buckets.get(key);
    const tokens = known ? Math.min(burst, known.tokens + ((now - known.at) * perSecond) / 1000) : burst;
    this.buckets.delete(key); // re-inserted last: the map's order is least recently used first
    if (tokens >= 1) {
      this.buckets.set(key, { tokens: tokens - 1, at: now });
      return 0;
    }
    this.buckets.set(key, { tokens, at: now });
    return Math.max(1, Math.ceil(((1 - tokens) * 1000) / perSecond - 1e-6)); // (float noise is not a millisecond)
  }

  private evict(now: number): void {
    for (const [key, bucket] of this.buckets) {
      if (now - bucket.at < this.refillMs && this.buckets.size < this.maxKeys) break;
      this.buckets.delete(key);
    }
  }
}

/** Spends one publish token of `sender`, or fails with rate-limited saying when to retry. */
export function checkPublishRate(limiter: RateLimiter, sender: string): void {
  const waitMs = limiter.take(sender);
  if (waitMs > 0) {
    const { perSecond, burst } = limiter.rate;
    fail('rate-limited', `publishing too fast: at most ${perSecond} per second (bursts of ${burst}); retry in ${waitMs} ms`);
  }
}
