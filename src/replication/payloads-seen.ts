// The partner's side of one-copy subscriptions (src/pubsub/one-copy.ts): a service sends an item
// published to several followed nodes with its payload once, through one node's notification,
// and as a notification without payload through the others. Which of the two arrives first is
// not fixed (each node's notifications may be held in its own digest window), so a notification
// without payload waits a moment for the payload to arrive through another node; what never
// arrives is fetched (XEP-0060 §6.5.8) by the caller. This remembers which items arrived with
// their payload lately, per service, and wakes the waiters. Memory only and bounded: forgetting
// costs a fetch, never an item.

import { LRUCache } from 'lru-cache';

/** Items remembered per Hermod (service, item id pairs). */
export const PAYLOADS_REMEMBERED = 20_000;
/** How long a notification without payload waits for the payload through another node (ms). */
export const PAYLOAD_WAIT_MS = 5_000;

const keyOf = (service: string, itemId: string): string => `${service}\u0000${itemId}`;

export class PayloadsSeen {
  private readonly seen: LRUCache<string, true>;
  private readonly waiting = new Map<string, Set<() => void>>();

  constructor(max = PAYLOADS_REMEMBERED) {
    this.seen = new LRUCache<string, true>({ max });
  }

  /** An item of `service` arrived with its payload through a node whose items are applied as they come (or left to its history). */
  arrived(service: string, itemId: string): void {
    const k = keyOf(service, itemId);
    this.seen.set(k, true);
    const wake = this.waiting.get(k);
    if (!wake) return;
    this.waiting.delete(k);
    for (const w of wake) w();
  }

  /**
   * Resolves true once the item has arrived with its payload (at once if it has lately), false
   * when `ms` pass first or `signal` aborts. Errors: none.
   */
  wait(service: string, itemId: string, ms = PAYLOAD_WAIT_MS, signal?: AbortSignal): Promise<boolean> {
    const k = keyOf(service, itemId);
    if (this.seen.has(k)) return Promise.resolve(true);
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const set = this.waiting.get(k) ?? new Set<() => void>();
      this.waiting.set(k, set);
      const done = (arrived: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        set.delete(wake);
        if (set.size === 0 && this.waiting.get(k) === set) this.waiting.delete(k);
        resolve(arrived);
      };
      const wake = (): void => done(true);
      const aborted = (): void => done(false);
      const timer = setTimeout(() => done(false), ms);
      signal?.addEventListener('abort', aborted, { once: true });
      set.add(wake);
    });
  }

  /** Notifications without payload waiting now (for tests and status). */
  get waiters(): number {
    let n = 0;
    for (const set of this.waiting.values()) n += set.size;
    return n;
  }
}
