// Node state in memory and per-node serialisation for the pub/sub core. The hot state of a node
// (record, affiliations, subscriptions) is loaded once from the store into an LRU and written
// through by the service (the only writer of its store); one lock per node makes each change
// see the state the previous one produced. `guarded` is the one check → lock → re-check shape
// every changing use case of the service goes through.

import { LRUCache } from 'lru-cache';
import type { Store } from '../store/store.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { fail } from './errors.ts';
import { DEFAULT_NODE_CONFIG } from './node-config.ts';
import type { Affiliation, NodeRecord, Subscription } from './types.ts';

/** What the service keeps of a node in memory (bare JID -> affiliation; subscriptions in order). */
export interface NodeState {
  record: NodeRecord;
  affiliations: Map<string, Affiliation>;
  subscriptions: Subscription[];
}

export class NodeStates {
  private readonly cache: LRUCache<string, NodeState>;
  /** Loads under way, shared: concurrent cache misses must end with one state object per node. */
  private readonly loading = new Map<string, Promise<NodeState | undefined>>();
  private readonly locks = new KeyedMutex();

  /** `cacheNodes`: how many nodes' state to keep in memory. */
  constructor(
    private readonly store: Store,
    cacheNodes: number,
  ) {
    this.cache = new LRUCache({ max: cacheNodes });
  }

  /** The node's state, from memory or the store; undefined when there is no such node. Rejects on store failure. */
  async load(nodeId: string): Promise<NodeState | undefined> {
    const cached = this.cache.get(nodeId);
    if (cached) return cached;
    let pending = this.loading.get(nodeId);
    if (!pending) {
      pending = (async () => {
        const stored = await this.store.getNode(nodeId);
        if (!stored) return undefined;
        // Records written before a configuration field existed get its default.
        const record: NodeRecord = { ...stored, config: { ...DEFAULT_NODE_CONFIG, ...stored.config } };
        const [affiliations, subscriptions] = await Promise.all([this.store.getAffiliations(nodeId), this.store.getSubscriptions(nodeId)]);
        // A change made while loading (through a state created meanwhile) wins over what was read.
        const current = this.cache.get(nodeId);
        if (current) return current;
        const state: NodeState = { record, affiliations, subscriptions };
        this.cache.set(nodeId, state);
        return state;
      })().finally(() => this.loading.delete(nodeId));
      this.loading.set(nodeId, pending);
    }
    return pending;
  }

  /** The state of an existing node. Errors: `nodeid-required` (no or empty id), `item-not-found` (no such node). */
  async node(nodeId: string | undefined): Promise<NodeState> {
    if (nodeId === undefined || nodeId === '') fail('nodeid-required');
    const state = await this.load(nodeId);
    if (!state) fail('item-not-found', `node '${nodeId}' does not exist`);
    return state;
  }

  /** Drops a node's state from memory (created or deleted: the store is what counts). */
  forget(nodeId: string): void {
    this.cache.delete(nodeId);
  }

  /** Runs `change` alone among the changes of this node (queued behind those under way). */
  mutate<T>(nodeId: string, change: () => Promise<T>): Promise<T> {
    return this.locks.run(nodeId, change);
  }

  /**
   * Check → lock → re-check → change: `check` runs on the node's state first without the lock
   * (`locked` false), so that a refused request fails at once instead of queueing, then again
   * under the node's lock on the state as it is then (`locked` true; the node may have changed
   * or gone meanwhile), and `change` gets what that second check returned. Work that must
   * happen once (taking a rate token) runs when `locked` is false. Errors: those of node()
   * (`nodeid-required`, `item-not-found`), and what `check` and `change` raise.
   */
  async guarded<C, T>(nodeId: string | undefined, check: (state: NodeState, locked: boolean) => C | Promise<C>, change: (state: NodeState, checked: C) => Promise<T>): Promise<T> {
    const first = await this.node(nodeId);
    await check(first, false);
    const id = first.record.id;
    return this.mutate(id, async () => {
      const state = await this.node(id);
      return change(state, await check(state, true));
    });
  }

  /** Resolves when every change under way has finished. */
  idle(): Promise<void> {
    return this.locks.idle();
  }
}
