// Node state in memory and per-node serialisation for the pub/sub core. The hot state of a node
// (record, affiliations, subscriptions) is loaded once from the store into an LRU and written
// through by the service; one lock per node makes each change see the state the previous one
// produced. `guarded` is the one check → lock → re-check shape every changing use case of the
// service goes through. When several processes share the store (Store.watch, Store.exclusive),
// what the others change is dropped from the LRU as their changes feed tells, and each change
// runs under the node's cluster-wide lock on state reread if another process changed it since.

import { LRUCache } from 'lru-cache';
import type { Store } from '../store/store.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { fail, PubsubError } from './errors.ts';
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
  private readonly unwatch: (() => void) | undefined;

  /** `cacheNodes`: how many nodes' state to keep in memory. */
  constructor(
    private readonly store: Store,
    cacheNodes: number,
  ) {
    this.cache = new LRUCache({ max: cacheNodes });
    this.unwatch = store.watch?.((change) => {
      if (change.kind === 'node') this.forget(change.node);
    });
  }

  /** The node's state, from memory or the store; undefined when there is no such node. Rejects on store failure. */
  async load(nodeId: string): Promise<NodeState | undefined> {
    const cached = this.cache.get(nodeId);
    if (cached) return cached;
    let pending = this.loading.get(nodeId);
    if (!pending) {
      let load: Promise<NodeState | undefined> | undefined = undefined;
      load = (async () => {
        const stored = await this.store.getNode(nodeId);
        if (!stored) return undefined;
        // Records written before a configuration field existed get its default.
        const record: NodeRecord = { ...stored, config: { ...DEFAULT_NODE_CONFIG, ...stored.config } };
        const [affiliations, subscriptions] = await Promise.all([this.store.getAffiliations(nodeId), this.store.getSubscriptions(nodeId)]);
        // A change made while loading (through a state created meanwhile) wins over what was read.
        const current = this.cache.get(nodeId);
        if (current) return current;
        const state: NodeState = { record, affiliations, subscriptions };
        // Forgotten while loading (another process changed it): what was read may be older.
        if (this.loading.get(nodeId) === load) this.cache.set(nodeId, state);
        return state;
      })().finally(() => {
        if (this.loading.get(nodeId) === load) this.loading.delete(nodeId);
      });
      this.loading.set(nodeId, load);
      pending = load;
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

  /**
   * The state of an existing node once `check` passes on it (a read). On a shared store a
   * refusal may come from a cache another process made stale: the node is then read again from
   * the store (not cached: stored()) and checked again, and that refusal stands. Errors: those
   * of node() and of `check`.
   */
  async read(nodeId: string | undefined, check: (state: NodeState) => unknown): Promise<NodeState> {
    const state = await this.node(nodeId);
    try {
      await check(state);
      return state;
    } catch (err) {
      if (!this.store.exclusive || !(err instanceof PubsubError) || err.condition === 'rate-limited') throw err;
      const fresh = await this.stored(state.record.id);
      await check(fresh);
      return fresh;
    }
  }

  /**
   * The node's state as the store holds it now, read past the cache and not cached: a cached
   * state replaced while a change of this process is under way would lose that change. Errors:
   * `item-not-found` (no such node).
   */
  private async stored(nodeId: string): Promise<NodeState> {
    const [record, affiliations, subscriptions] = await Promise.all([this.store.getNode(nodeId), this.store.getAffiliations(nodeId), this.store.getSubscriptions(nodeId)]);
    if (!record) fail('item-not-found', `node '${nodeId}' does not exist`);
    return { record: { ...record, config: { ...DEFAULT_NODE_CONFIG, ...record.config } }, affiliations, subscriptions };
  }

  /** Drops a node's state from memory (created, deleted or changed elsewhere: the store is what counts); a load under way is not cached. */
  forget(nodeId: string): void {
    this.cache.delete(nodeId);
    this.loading.delete(nodeId);
  }

  /**
   * Runs `change` alone among the changes of this node (queued behind those under way), and
   * under the node's cluster-wide lock when the store is shared (Store.exclusive), on state
   * reread when another process changed the node since.
   */
  mutate<T>(nodeId: string, change: () => Promise<T>): Promise<T> {
    const exclusive = this.store.exclusive?.bind(this.store);
    if (!exclusive) return this.locks.run(nodeId, change);
    return this.locks.run(nodeId, () =>
      exclusive(nodeId, (stale) => {
        if (stale) this.forget(nodeId);
        return change();
      }),
    );
  }

  /** Stops listening to the store's changes. */
  close(): void {
    this.unwatch?.();
  }

  /**
   * Check → lock → re-check → change: `check` runs on the node's state first without the lock
   * (`locked` false), so that a refused request fails at once instead of queueing, then again
   * under the node's lock on the state as it is then (`locked` true; the node may have changed
   * or gone meanwhile), and `change` gets what that second check returned. On a shared store a
   * refusal by the first check may come from a cache another process made stale: the first
   * check then runs again on the node as stored (stored(): read, no lock taken, so a refusal
   * that stands costs no lock writes), and that refusal stands. `once` runs exactly once, after
   * the first check passed and before the lock is taken: work that must not be repeated
   * (taking a rate token; its `rate-limited` refusal stands). Errors: those of node()
   * (`nodeid-required`, `item-not-found`), and what `check`, `once` and `change` raise.
   */
  async guarded<C, T>(
    nodeId: string | undefined,
    check: (state: NodeState, locked: boolean) => C | Promise<C>,
    change: (state: NodeState, checked: C) => Promise<T>,
    once?: (state: NodeState) => void,
  ): Promise<T> {
    let first = await this.node(nodeId);
    const id = first.record.id;
    try {
      await check(first, false);
    } catch (err) {
      if (!this.store.exclusive || !(err instanceof PubsubError) || err.condition === 'rate-limited') throw err;
      first = await this.stored(id);
      await check(first, false);
    }
    once?.(first);
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
