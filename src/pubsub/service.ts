// The pub/sub service core (XEP-0060 semantics, no XMPP wire format). Every operation takes the
// acting JID, asks the capability table, changes the Store and hands events to the injected
// Notifier. Errors are PubsubError names; the XMPP layer maps them to stanzas.
//
// Hot node state (record, affiliations, subscriptions) is cached in an LRU and written through:
// the service is the only writer of its store. Changes to one node are serialised, so a
// notification is always computed from the state that the change produced.

import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { bareJid, type ItemQuery, type Store } from '../store/store.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { may, type Action } from './capabilities.ts';
import { fail } from './errors.ts';
import { applyConfig, DEFAULT_NODE_CONFIG, itemLimit } from './node-config.ts';
import {
  type Affiliation,
  type Item,
  type NodeConfig,
  type NodeRecord,
  type Notifier,
  type Recipient,
  type ServiceEvent,
  type Subscription,
  type SubscriptionState,
} from './types.ts';

export interface ServiceOptions {
  store: Store;
  notifier: Notifier;
  /** Bare JIDs with owner rights on every node. */
  admins?: Iterable<string>;
  /** May this bare JID create nodes? (Admins always may.) */
  mayCreateNodes: (bare: string) => boolean;
  /** Defaults for new nodes, over the built-in ones. */
  nodeDefaults?: Partial<NodeConfig>;
  now?: () => number;
  newId?: () => string;
  /** How many nodes' state to keep in memory. */
  cacheNodes?: number;
}

interface NodeState {
  record: NodeRecord;
  affiliations: Map<string, Affiliation>;
  subscriptions: Subscription[];
}

export interface PublishRequest {
  /** Absent when the publish has no <item/> at all. */
  item?: { id?: string; payload?: string };
}

export interface NodeMetadata {
  record: NodeRecord;
  owners: string[];
  publishers: string[];
  subscriberCount: number;
}

const NODE_ID_MAX = 1023;

export class PubsubService {
  private readonly store: Store;
  private readonly notifier: Notifier;
  private readonly admins: Set<string>;
  private readonly mayCreateNodes: (bare: string) => boolean;
  private readonly defaults: NodeConfig;
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly cache: LRUCache<string, NodeState>;
  private readonly locks = new KeyedMutex();

  constructor(options: ServiceOptions) {
    this.store = options.store;
    this.notifier = options.notifier;
    this.admins = new Set([...(options.admins ?? [])].map(bareJid));
    this.mayCreateNodes = options.mayCreateNodes;
    this.defaults = applyConfig({ ...DEFAULT_NODE_CONFIG }, options.nodeDefaults ?? {});
    this.now = options.now ?? Date.now;
    this.newId = options.newId ?? randomUUID;
    this.cache = new LRUCache({ max: options.cacheNodes ?? 10_000 });
  }

  /** Resolves when every change under way has finished (for clean shutdown). */
  idle(): Promise<void> {
    return this.locks.idle();
  }

  // ---- state and permissions -------------------------------------------------------------

  private async load(nodeId: string): Promise<NodeState | undefined> {
    const cached = this.cache.get(nodeId);
    if (cached) return cached;
    const record = await this.store.getNode(nodeId);
    if (!record) return undefined;
    const [affiliations, subscriptions] = await Promise.all([this.store.getAffiliations(nodeId), this.store.getSubscriptions(nodeId)]);
    const state: NodeState = { record, affiliations, subscriptions };
    this.cache.set(nodeId, state);
    return state;
  }

  private async node(nodeId: string | undefined): Promise<NodeState> {
    if (nodeId === undefined || nodeId === '') fail('nodeid-required');
    const state = await this.load(nodeId);
    if (!state) fail('item-not-found', `node '${nodeId}' does not exist`);
    return state;
  }

  private affiliationOf(state: NodeState, jid: string): Affiliation {
    const bare = bareJid(jid);
    if (this.admins.has(bare)) return 'owner';
    return state.affiliations.get(bare) ?? 'none';
  }

  private can(state: NodeState, jid: string, action: Action): boolean {
    return may(this.affiliationOf(state, jid), state.record.config.accessModel, action);
  }

  private require(state: NodeState, jid: string, action: Action): void {
    if (this.can(state, jid, action)) return;
    const affiliation = this.affiliationOf(state, jid);
    if (affiliation === 'none' && state.record.config.accessModel === 'whitelist') fail('closed-node');
    fail('forbidden');
  }

  /** Subscribers that may receive notifications right now (access re-checked per send). */
  private recipients(state: NodeState): Recipient[] {
    const out: Recipient[] = [];
    for (const sub of state.subscriptions) {
      if (sub.state === 'subscribed' && this.can(state, sub.jid, 'be-notified')) out.push({ jid: sub.jid, subid: sub.subid });
    }
    return out;
  }

  private emit(event: ServiceEvent, recipients: Recipient[]): void {
    if (recipients.length > 0) this.notifier(event, recipients);
  }

  private mutate<T>(nodeId: string, change: () => Promise<T>): Promise<T> {
    return this.locks.run(nodeId, change);
  }

  // ---- discovery -----------------------------------------------------------------------

  async listNodes(): Promise<NodeRecord[]> {
    return this.store.listNodes();
  }

  async metadata(nodeId: string): Promise<NodeMetadata> {
    const state = await this.node(nodeId);
    const owners: string[] = [];
    const publishers: string[] = [];
    for (const [jid, affiliation] of state.affiliations) {
      if (affiliation === 'owner') owners.push(jid);
      if (affiliation === 'publisher') publishers.push(jid);
    }
    const subscriberCount = state.subscriptions.filter((s) => s.state === 'subscribed').length;
    return { record: state.record, owners, publishers, subscriberCount };
  }

  defaultConfig(): NodeConfig {
    return { ...this.defaults };
  }

  // ---- owner use cases -------------------------------------------------------------------

  async create(actor: string, nodeId: string | undefined, config: Partial<NodeConfig> = {}): Promise<string> {
    const bare = bareJid(actor);
    if (!this.admins.has(bare) && !this.mayCreateNodes(bare)) fail('forbidden', 'you may not create nodes on this service');
    const id = nodeId ?? this.newId();
    if (id.length > NODE_ID_MAX) fail('not-acceptable', `node id longer than ${NODE_ID_MAX} characters`);
    const nodeConfig = applyConfig(this.defaults, config);
    return this.mutate(id, async () => {
      if (await this.load(id)) fail('conflict', `node '${id}' already exists`);
      const record: NodeRecord = { id, config: nodeConfig, creator: bare, created: this.now() };
      await this.store.putNode(record);
      await this.store.setAffiliation(id, bare, 'owner');
      this.cache.delete(id);
      return id;
    });
  }

  async getConfig(actor: string, nodeId: string | undefined): Promise<NodeConfig> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'configure');
    return { ...state.record.config };
  }

  async configure(actor: string, nodeId: string | undefined, change: Partial<NodeConfig>): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'configure');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const config = applyConfig(state.record.config, change);
      const record: NodeRecord = { ...state.record, config };
      await this.store.putNode(record);
      state.record = record;
      const keep = itemLimit(config);
      if (keep === 0) await this.store.purgeItems(id);
      else await this.store.trimItems(id, keep);
      await this.dropUnauthorisedSubscriptions(state);
      if (config.notifyConfig) this.emit({ kind: 'config', node: id }, this.recipients(state));
    });
  }

  async delete(actor: string, nodeId: string | undefined): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'delete');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const recipients = state.record.config.notifyDelete ? this.recipients(state) : [];
      await this.store.deleteNode(id);
      this.cache.delete(id);
      this.emit({ kind: 'delete', node: id }, recipients);
    });
  }

  async purge(actor: string, nodeId: string | undefined): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'purge');
    if (!checked.record.config.persistItems) fail('persistent-items-unsupported');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      await this.store.purgeItems(id);
      if (state.record.config.notifyRetract) this.emit({ kind: 'purge', node: id }, this.recipients(state));
    });
  }

  async getSubscriptions(actor: string, nodeId: string | undefined): Promise<Subscription[]> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'manage-subscriptions');
    return state.subscriptions.map((s) => ({ ...s }));
  }

  /** Owner changes subscriptions: state 'none' removes, 'subscribed' adds or approves. All or nothing. */
  async setSubscriptions(actor: string, nodeId: string | undefined, changes: Array<{ jid: string; subid?: string; state: SubscriptionState }>): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'manage-subscriptions');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      for (const change of changes) {
        if (change.state === 'subscribed' && !this.can(state, change.jid, 'subscribe')) {
          fail('not-acceptable', `${change.jid} may not subscribe under the node's access model or its affiliation; change its affiliation first`);
        }
        if (change.state !== 'subscribed' && change.state !== 'none') fail('not-acceptable', `subscription state '${change.state}' cannot be set by an owner here`);
        if (change.subid !== undefined && change.state === 'none' && !state.subscriptions.some((s) => s.jid === change.jid && s.subid === change.subid)) {
          fail('not-acceptable', `no subscription ${change.subid} for ${change.jid}`);
        }
      }
      for (const change of changes) {
        const existing = state.subscriptions.filter((s) => s.jid === change.jid && (change.subid === undefined || s.subid === change.subid));
        if (change.state === 'none') {
          for (const sub of existing) await this.removeSubscription(state, sub, true);
        } else if (existing.length === 0) {
          await this.addSubscription(state, change.jid, 'subscribed', true);
        } else {
          for (const sub of existing) {
            if (sub.state === 'subscribed') continue;
            sub.state = 'subscribed';
            await this.store.putSubscription(sub);
            this.notifySubscription(sub);
          }
        }
      }
    });
  }

  async getAffiliations(actor: string, nodeId: string | undefined): Promise<Map<string, Affiliation>> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'manage-affiliations');
    return new Map(state.affiliations);
  }

  /** Owner changes affiliations, all or nothing. Takes effect at once on subscriptions. */
  async setAffiliations(actor: string, nodeId: string | undefined, changes: Array<{ jid: string; affiliation: Affiliation }>): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'manage-affiliations');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const after = new Map(state.affiliations);
      for (const { jid, affiliation } of changes) {
        if (affiliation === 'none') after.delete(bareJid(jid));
        else after.set(bareJid(jid), affiliation);
      }
      if (![...after.values()].includes('owner')) fail('not-acceptable', 'a node must keep at least one owner');
      for (const { jid, affiliation } of changes) {
        const bare = bareJid(jid);
        await this.store.setAffiliation(id, bare, affiliation);
        if (affiliation === 'none') state.affiliations.delete(bare);
        else state.affiliations.set(bare, affiliation);
      }
      await this.dropUnauthorisedSubscriptions(state);
    });
  }

  /** Removes (and tells) every subscription whose JID may no longer subscribe. */
  private async dropUnauthorisedSubscriptions(state: NodeState): Promise<void> {
    for (const sub of [...state.subscriptions]) {
      if (!this.can(state, sub.jid, 'subscribe')) await this.removeSubscription(state, sub, true);
    }
  }

  // ---- entity use cases ------------------------------------------------------------------

  async subscribe(actor: string, nodeId: string | undefined, jid: string): Promise<Subscription> {
    if (bareJid(jid) !== bareJid(actor)) fail('invalid-jid', 'the subscribed JID must have the bare JID of the requester');
    const checked = await this.node(nodeId);
    this.require(checked, jid, 'subscribe');
    const id = checked.record.id;
    return this.mutate(id, async () => {
      const state = await this.node(id);
      this.require(state, jid, 'subscribe');
      const existing = state.subscriptions.find((s) => s.jid === jid);
      if (existing) return { ...existing };
      return { ...(await this.addSubscription(state, jid, 'subscribed', false)) };
    });
  }

  async unsubscribe(actor: string, nodeId: string | undefined, jid: string, subid: string | undefined): Promise<void> {
    const checked = await this.node(nodeId);
    if (bareJid(jid) !== bareJid(actor) && !this.can(checked, actor, 'manage-subscriptions')) fail('forbidden', 'you may only unsubscribe your own JID');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const subs = state.subscriptions.filter((s) => s.jid === jid);
      if (subs.length === 0) fail('not-subscribed');
      let target: Subscription | undefined;
      if (subid === undefined) {
        if (subs.length > 1) fail('subid-required');
        target = subs[0];
      } else {
        target = subs.find((s) => s.subid === subid);
        if (!target) fail('invalid-subid');
      }
      if (target) await this.removeSubscription(state, target, false);
    });
  }

  private async addSubscription(state: NodeState, jid: string, subState: SubscriptionState, notify: boolean): Promise<Subscription> {
    const sub: Subscription = { node: state.record.id, jid, subid: this.newId(), state: subState };
    await this.store.putSubscription(sub);
    state.subscriptions.push(sub);
    if (notify) this.notifySubscription(sub);
    return sub;
  }

  private async removeSubscription(state: NodeState, sub: Subscription, notify: boolean): Promise<void> {
    await this.store.deleteSubscription(sub.node, sub.jid, sub.subid);
    state.subscriptions = state.subscriptions.filter((s) => s !== sub);
    if (notify) this.notifySubscription({ ...sub, state: 'none' });
  }

  /** §8.8.4: tell the entity its subscription changed (regardless of the access model). */
  private notifySubscription(sub: Subscription): void {
    this.notifier({ kind: 'subscription', node: sub.node, subscription: sub }, [{ jid: sub.jid, subid: sub.subid }]);
  }

  async getItems(actor: string, nodeId: string | undefined, query: ItemQuery = {}): Promise<Item[]> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'retrieve-items');
    if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    return this.store.getItems(state.record.id, query);
  }

  async publish(actor: string, nodeId: string | undefined, request: PublishRequest): Promise<string> {
    const checked = await this.node(nodeId);
    this.requirePublish(checked, actor);
    const { config } = checked.record;
    const { item } = request;
    const needsPayload = config.persistItems || config.deliverPayloads;
    if (!item && needsPayload) fail('item-required');
    if (item && !item.payload && needsPayload) fail('payload-required');
    if (item?.payload && !needsPayload) fail('item-forbidden');
    const id = checked.record.id;
    return this.mutate(id, async () => {
      const state = await this.node(id);
      this.requirePublish(state, actor);
      const published: Item = { id: item?.id || this.newId(), payload: item?.payload ?? '', publisher: bareJid(actor), published: this.now() };
      const keep = itemLimit(state.record.config);
      if (keep > 0) await this.store.putItem(id, published, keep);
      if (state.record.config.deliverNotifications) {
        this.emit({ kind: 'items', node: id, item: published, withPayload: state.record.config.deliverPayloads }, this.recipients(state));
      }
      return published.id;
    });
  }

  private requirePublish(state: NodeState, actor: string): void {
    const { publishModel, accessModel } = state.record.config;
    const affiliation = this.affiliationOf(state, actor);
    if (may(affiliation, accessModel, 'publish')) return;
    if (affiliation === 'outcast') fail('forbidden');
    if (publishModel === 'open') return;
    if (publishModel === 'subscribers' && state.subscriptions.some((s) => bareJid(s.jid) === bareJid(actor) && s.state === 'subscribed')) return;
    fail('forbidden');
  }

  /** `notify` undefined means: as the node's notify_retract says. */
  async retract(actor: string, nodeId: string | undefined, itemIds: string[], notify: boolean | undefined): Promise<void> {
    if (itemIds.length === 0) fail('item-required');
    const checked = await this.node(nodeId);
    const id = checked.record.id;
    if (!checked.record.config.persistItems) fail('persistent-items-unsupported');
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const mayRetractAny = this.can(state, actor, 'retract-any');
      if (!mayRetractAny && !this.can(state, actor, 'retract-own')) fail('forbidden');
      const found = await this.store.getItems(id, { ids: itemIds });
      if (found.length !== new Set(itemIds).size) {
        const missing = itemIds.filter((i) => !found.some((f) => f.id === i));
        fail('item-not-found', `no item ${missing.join(', ')} in node '${id}'`);
      }
      if (!mayRetractAny && found.some((item) => item.publisher !== bareJid(actor))) fail('forbidden', 'you may only retract your own items');
      for (const item of found) await this.store.deleteItem(id, item.id);
      if (notify ?? state.record.config.notifyRetract) this.emit({ kind: 'retract', node: id, itemIds: found.map((i) => i.id) }, this.recipients(state));
    });
  }

  async subscriptionsOf(actor: string, nodeId?: string): Promise<Subscription[]> {
    if (nodeId !== undefined) await this.node(nodeId);
    const subs = await this.store.getSubscriptionsOf(bareJid(actor));
    return nodeId === undefined ? subs : subs.filter((s) => s.node === nodeId);
  }

  async affiliationsOf(actor: string, nodeId?: string): Promise<Array<{ node: string; affiliation: Affiliation }>> {
    if (nodeId !== undefined) {
      const state = await this.node(nodeId);
      const affiliation = this.affiliationOf(state, actor);
      return affiliation === 'none' ? [] : [{ node: nodeId, affiliation }];
    }
    return this.store.getAffiliationsOf(bareJid(actor));
  }
}
