// The partner's side of one-copy subscriptions (src/pubsub/one-copy.ts): a service sends an item
// published to several followed nodes with its payload once, through one node's notification,
// and as a notification without payload through the others. Which of the two arrives first is
// not fixed (each node's notifications may be held in its own digest window), so a notification
// without payload waits a moment for the payload to be written through another node; what does
// not come is fetched (XEP-0060 §6.5.8) by the caller.
//
// Which payload? A notification without payload names only the item id. The service sends it
// after the payload it stands for, and each node's notifications arrive in order, so the payload
// it stands for is one that arrived after the previous notification of that item on the same
// node: every notification of a one-copy node gets an ordinal here (`notified`), a payload's
// write is recorded with its notification's ordinal once the sink took it (`written`), and a
// notification without payload is satisfied by a write whose ordinal is above the previous
// notification of the item on its node (`wait`). So an older version's write never stands for a
// newer one (its payload lost on the way — e.g. its node was just unfollowed — means a fetch),
// and a payload left to the history or not written yet is waited for. Memory only and bounded
// (the least recently notified items are forgotten): forgetting costs a fetch, never an item.

import { LRUCache } from 'lru-cache';

/** Items remembered per Hermod (service, item id pairs). */
export const PAYLOADS_REMEMBERED = 20_000;
/** How long a notification without payload waits for its payload through another node at least (ms). */
export const PAYLOAD_WAIT_MS = 5_000;

interface Seen {
  /** now() when this record was made: writes of notifications up to it belong to a forgotten record. */
  from: number;
  /** Ordinal of the newest notification whose payload of this item was written. */
  written: number;
  /** Per node: the ordinal of the item's last notification there. */
  nodes: Map<string, number>;
  /** Per node: the ordinal of the item's last notification there that carried its payload. */
  carried: Map<string, number>;
}

interface Waiter {
  after: number;
  wake: () => void;
}

const keyOf = (service: string, itemId: string): string => `${service}\u0000${itemId}`;

export class PayloadsSeen {
  private ordinal = 0;
  private readonly items: LRUCache<string, Seen>;
  private readonly waiting = new Map<string, Set<Waiter>>();

  constructor(max = PAYLOADS_REMEMBERED) {
    this.items = new LRUCache<string, Seen>({ max });
  }

  /** The ordinal of the last notification so far: a follow that starts now knows nothing of those up to it. */
  now(): number {
    return this.ordinal;
  }

  /**
   * A notification of item `itemId` (`payload`: with its payload) arrived from `node` of a
   * one-copy subscription: its ordinal, and the ordinal of the item's previous notification on
   * that node (at least `floor`: now() when the node's follow began).
   */
  notified(service: string, node: string, itemId: string, floor: number, payload = false): { at: number; prev: number } {
    const k = keyOf(service, itemId);
    let seen = this.items.get(k);
    if (!seen) {
      seen = { from: this.ordinal, written: 0, nodes: new Map(), carried: new Map() };
      this.items.set(k, seen);
    }
    const at = ++this.ordinal;
    const prev = Math.max(seen.nodes.get(node) ?? 0, floor);
    seen.nodes.set(node, at);
    if (payload) seen.carried.set(node, at);
    return { at, prev };
  }

  /**
   * The payload that arrived with the notification of ordinal `at` was written. Ignored when the
   * item's record was forgotten since (a slow write must not stand for what came after).
   */
  written(service: string, itemId: string, at: number): void {
    const k = keyOf(service, itemId);
    const seen = this.items.get(k);
    if (!seen || at <= seen.from) return;
    seen.written = Math.max(seen.written, at);
    const waiters = this.waiting.get(k);
    if (!waiters) return;
    for (const w of waiters) if (seen.written > w.after) w.wake();
  }

  /**
   * Resolves true once a payload of the item that arrived after ordinal `after` is written (at
   * once if it is), false when `ms` pass first or `signal` aborts. Errors: none.
   */
  wait(service: string, itemId: string, after: number, ms = PAYLOAD_WAIT_MS, signal?: AbortSignal): Promise<boolean> {
    const k = keyOf(service, itemId);
    if ((this.items.get(k)?.written ?? 0) > after) return Promise.resolve(true);
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const set = this.waiting.get(k) ?? new Set<Waiter>();
      this.waiting.set(k, set);
      const done = (arrived: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        set.delete(waiter);
        if (set.size === 0 && this.waiting.get(k) === set) this.waiting.delete(k);
        resolve(arrived);
      };
      const waiter: Waiter = { after, wake: () => done(true) };
      const aborted = (): void => done(false);
      const timer = setTimeout(() => done(false), ms);
      signal?.addEventListener('abort', aborted, { once: true });
      set.add(waiter);
    });
  }

  /**
   * Items whose last payload through `node` (of `service`) is not written (yet), and no newer one
   * through another node is, each with the other nodes that notified it: what a node's follow
   * leaves unsettled when it ends (PartnerManager.ended).
   */
  unwritten(service: string, node: string): Array<{ itemId: string; others: string[] }> {
    const out: Array<{ itemId: string; others: string[] }> = [];
    const prefix = `${service}\u0000`;
    for (const [k, seen] of this.items.entries()) {
      if (!k.startsWith(prefix)) continue;
      const last = seen.carried.get(node);
      if (last === undefined || last <= seen.written) continue;
      out.push({ itemId: k.slice(prefix.length), others: [...seen.nodes.keys()].filter((n) => n !== node) });
    }
    return out;
  }

  /** Notifications without payload waiting now (for tests and status). */
  get waiters(): number {
    let n = 0;
    for (const set of this.waiting.values()) n += set.size;
    return n;
  }
}
