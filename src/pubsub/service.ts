// The pub/sub service core (XEP-0060 semantics, no XMPP wire format). Every operation takes the
// acting JID, asks the capability table, changes the Store and hands events to the injected
// Notifier. Errors are PubsubError names; the XMPP layer maps them to stanzas.
//
// Hot node state (record, affiliations, subscriptions) is cached in an LRU and written through:
// the service is the only writer of its store. Changes to one node are serialised, so a
// notification is always computed from the state that the change produced.
//
// Time-driven work (item_expire, leased subscriptions) runs on ExpiryScheduler timers that
// start() re-arms from the store; every change to items is also appended to the node's archive
// (publications and tombstones) for MAM queries.

import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { bareJid, type ArchiveQuery, type ItemQuery, type Page, type PageRequest, type Store } from '../store/store.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { needsRoster, rosterGrants, rosterModelRefusal, type PresenceView, type Roster, type RosterSource } from './access.ts';
import { may, needsApproval, type Action } from './capabilities.ts';
import { ExpiryScheduler, realTimers, type Timers } from './expiry.ts';
import { fail } from './errors.ts';
import { checkMaxItems, checkNodeQuota, checkPublishRate, NO_LIMITS, nodeItemLimit, RateLimiter, type Limits } from './limits.ts';
import { applyConfig, DEFAULT_NODE_CONFIG } from './node-config.ts';
import { checkNodeFull, checkPublishShape, isNotificationOnlyTransient } from './publish-rules.ts';
import { applySubscriptionOptions, DEFAULT_SUBSCRIPTION_OPTIONS, optionsOf, sameOptions } from './subscription-options.ts';
import {
  ACCESS_MODELS,
  type AccessModel,
  type Affiliation,
  type ArchiveEntry,
  type Item,
  type NodeConfig,
  type NodeRecord,
  type Notifier,
  type Recipient,
  type ServiceEvent,
  type Subscription,
  type SubscriptionOptions,
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
  /** Clock and timers for item expiry (tests inject their own; `now` above wins for stamps). */
  timers?: Timers;
  /** Background failures (item expiry, lease ends, roster reads); the default prints a process warning. */
  onError?: (err: unknown) => void;
  /** Items per node, nodes per owner, publish rate per sender (limits.ts); absent: NO_LIMITS. Admins are exempt from the last two. */
  limits?: Partial<Limits>;
  /** Owners' rosters for the presence and roster access models (absent: those models are refused). */
  rosters?: RosterSource;
  /** Who is available, for pubsub#presence_based_delivery (absent: nobody is known to be). */
  presence?: PresenceView;
}

interface NodeState {
  record: NodeRecord;
  affiliations: Map<string, Affiliation>;
  subscriptions: Subscription[];
}

export interface PublishRequest {
  /** Absent when the publish has no <item/> at all. */
  item?: { id?: string; payload?: string };
  /** §7.1.5 publish-options: the node's configuration must have these values. */
  preconditions?: Partial<NodeConfig>;
}

export interface NodeMetadata {
  record: NodeRecord;
  owners: string[];
  publishers: string[];
  subscriberCount: number;
}

const NODE_ID_MAX = 1023;

/** Most items (or ids, or nodes) one answer carries; larger results are paged (XEP-0059). */
export const PAGE_LIMIT = 1000;
/** Most archive entries one MAM answer carries (one message each). */
export const ARCHIVE_PAGE_LIMIT = 250;
/** Archive entries kept per node (publications and tombstones); the oldest go first. */
export const ARCHIVE_LIMIT = 100_000;

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
  private readonly expiry: ExpiryScheduler;
  /** Leased subscriptions (pubsub#expire), per node. */
  private readonly leases: ExpiryScheduler;
  private readonly limits: Limits;
  private readonly publishRate: RateLimiter | undefined;
  /** Creations per owner are serialised so that the node quota holds under concurrency. */
  private readonly ownerLocks = new KeyedMutex();
  private readonly rosterSource: RosterSource | undefined;
  private readonly presence: PresenceView | undefined;
  private readonly onError: (err: unknown) => void;

  constructor(options: ServiceOptions) {
    this.store = options.store;
    this.notifier = options.notifier;
    this.admins = new Set([...(options.admins ?? [])].map(bareJid));
    this.mayCreateNodes = options.mayCreateNodes;
    this.defaults = applyConfig({ ...DEFAULT_NODE_CONFIG }, options.nodeDefaults ?? {});
    this.limits = { ...NO_LIMITS, ...options.limits };
    checkMaxItems(this.defaults.maxItems, this.limits);
    this.now = options.now ?? Date.now;
    this.newId = options.newId ?? randomUUID;
    this.cache = new LRUCache({ max: options.cacheNodes ?? 10_000 });
    const timers = options.timers ?? (options.now ? { ...realTimers, now: options.now } : realTimers);
    const onError = options.onError ?? ((err: unknown) => process.emitWarning(`pubsub background work failed: ${String(err)}`));
    this.expiry = new ExpiryScheduler(timers, (node) => this.expireItems(node), onError);
    this.leases = new ExpiryScheduler(timers, (node) => this.endLeases(node), onError);
    this.rosterSource = options.rosters;
    this.presence = options.presence;
    this.onError = onError;
    if (this.limits.publishRate) this.publishRate = new RateLimiter(this.limits.publishRate, this.now);
  }

  /**
   * Restores background work from the store's timer index (Store.timerIndex): lease-end timers
   * at once, item-expiry timers after reading each expiring node's oldest item. Reads only the
   * nodes that have item expiry or leases, never every node. Call once after opening; may run
   * while requests are served (timers are only ever brought forward, and reads leave out items
   * past their expiry until the timer removes them). Rejects when the store cannot be read.
   */
  async start(): Promise<void> {
    const { itemExpiry, leaseEnds } = await this.store.timerIndex();
    for (const [node, end] of leaseEnds) this.leases.atLeastBy(node, end);
    for (const [node, expire] of itemExpiry) {
      const due = await this.oldestExpiry(node, expire);
      if (due !== undefined) this.expiry.atLeastBy(node, due);
    }
  }

  /** Resolves when every change under way has finished (for clean shutdown). */
  idle(): Promise<void> {
    return this.locks.idle();
  }

  /** Stops background work and waits for changes under way. */
  async close(): Promise<void> {
    this.expiry.stop();
    this.leases.stop();
    await this.locks.idle();
  }

  // ---- state and permissions -------------------------------------------------------------

  /** Loads under way, shared: concurrent cache misses must end with one state object per node. */
  private readonly loading = new Map<string, Promise<NodeState | undefined>>();

  private async load(nodeId: string): Promise<NodeState | undefined> {
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

  /** Does any resource of this JID's bare JID hold an approved subscription? */
  private isSubscribed(state: NodeState, jid: string): boolean {
    const bare = bareJid(jid);
    return state.subscriptions.some((s) => s.state === 'subscribed' && bareJid(s.jid) === bare);
  }

  /**
   * `rosters`: the owners' rosters, for the presence and roster models (rostersFor); without
   * them an entity with no affiliation gets nothing on such a node.
   */
  private can(state: NodeState, jid: string, action: Action, subscribed?: boolean, rosters?: readonly Roster[]): boolean {
    const affiliation = this.affiliationOf(state, jid);
    let { accessModel } = state.record.config;
    if (affiliation === 'none' && needsRoster(accessModel) && rosters && rosterGrants(state.record.config, rosters, jid)) accessModel = 'open';
    if (may(affiliation, accessModel, action, false)) return true;
    return may(affiliation, accessModel, action, subscribed ?? this.isSubscribed(state, jid));
  }

  private require(state: NodeState, jid: string, action: Action, rosters?: readonly Roster[]): void {
    if (this.can(state, jid, action, undefined, rosters)) return;
    const affiliation = this.affiliationOf(state, jid);
    const { accessModel } = state.record.config;
    if (affiliation === 'none' && accessModel === 'whitelist') fail('closed-node');
    if (affiliation === 'none' && accessModel === 'presence') fail('presence-subscription-required');
    if (affiliation === 'none' && accessModel === 'roster') fail('not-in-roster-group');
    if (affiliation === 'none' && accessModel === 'authorize' && may(affiliation, accessModel, action, true)) {
      fail('must-subscribe', 'only approved subscribers may do this on this node');
    }
    fail('forbidden');
  }

  /**
   * Subscribers that may receive notifications right now (access re-checked per send; paused
   * subscriptions skipped). A JID with several subscriptions gets one notification naming them.
   */
  private recipients(state: NodeState, rosters?: readonly Roster[]): Recipient[] {
    const out: Recipient[] = [];
    let byJid: Map<string, Recipient> | undefined;
    let multi: Set<string> | undefined;
    const presenceBased = state.record.config.presenceBasedDelivery;
    for (const sub of state.subscriptions) {
      if (sub.state !== 'subscribed' || sub.options?.deliver === false || !this.can(state, sub.jid, 'be-notified', true, rosters)) continue;
      if (presenceBased && !this.presence?.isAvailable(sub.jid)) continue; // §12: available subscribers only
      const seen = byJid?.get(sub.jid);
      if (seen) {
        (seen.subids ??= [seen.subid]).push(sub.subid);
        continue;
      }
      const recipient: Recipient = { jid: sub.jid, subid: sub.subid };
      out.push(recipient);
      (byJid ??= new Map()).set(sub.jid, recipient);
    }
    // A JID holding several subscriptions is told which ones, even if only one delivers.
    for (const sub of state.subscriptions) {
      if (sub.subid !== byJid?.get(sub.jid)?.subid) (multi ??= new Set()).add(sub.jid);
    }
    if (multi) for (const r of out) if (multi.has(r.jid)) r.subids ??= [r.subid];
    return out;
  }

  /** recipients() with the owners' rosters when the access model needs them. */
  private async audience(state: NodeState): Promise<Recipient[]> {
    return this.recipients(state, await this.rostersFor(state));
  }

  /**
   * The rosters of the node's owners, for the presence and roster access models (undefined for
   * other models). An owner whose roster cannot be read (no privilege covers it, or the server
   * does not answer) contributes nothing: access is refused rather than guessed.
   */
  private async rostersFor(state: NodeState): Promise<Roster[] | undefined> {
    if (!needsRoster(state.record.config.accessModel)) return undefined;
    const source = this.rosterSource;
    if (!source) return [];
    const read = await Promise.all(
      this.owners(state)
        .filter((owner) => source.covers(owner))
        .map((owner) =>
          source.roster(owner).catch((err: unknown) => {
            this.onError(new Error(`the roster of ${owner} could not be read (access refused meanwhile): ${String(err)}`));
            return undefined;
          }),
        ),
    );
    return read.filter((r): r is Roster => r !== undefined);
  }

  /** The owners of a node (bare JIDs), e.g. to send them approval requests. */
  private owners(state: NodeState): string[] {
    const out: string[] = [];
    for (const [jid, affiliation] of state.affiliations) if (affiliation === 'owner') out.push(jid);
    return out;
  }

  private emit(state: NodeState, event: ServiceEvent, recipients: Recipient[]): void {
    if (recipients.length > 0) this.notifier({ ...event, messageType: state.record.config.notificationType }, recipients);
  }

  private mutate<T>(nodeId: string, change: () => Promise<T>): Promise<T> {
    return this.locks.run(nodeId, change);
  }

  // ---- discovery -----------------------------------------------------------------------

  async listNodes(): Promise<NodeRecord[]> {
    return this.store.listNodes();
  }

  /** One page of the nodes, in id order (at most PAGE_LIMIT). */
  async pageNodes(page: PageRequest = { max: PAGE_LIMIT }): Promise<Page<NodeRecord>> {
    return this.store.pageNodes({ ...page, max: Math.min(page.max, PAGE_LIMIT) });
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

  /** The access models offered now: presence and roster only while a server grants roster access. */
  accessModels(): AccessModel[] {
    return ACCESS_MODELS.filter((m) => !needsRoster(m) || this.rosterSource?.granted() === true);
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
    checkMaxItems(nodeConfig.maxItems, this.limits);
    const refusal = rosterModelRefusal(nodeConfig.accessModel, this.rosterSource, [bare]);
    if (refusal) fail('not-acceptable', refusal);
    const quota = !this.admins.has(bare) && this.limits.maxNodesPerOwner !== Infinity;
    const createNode = (): Promise<string> =>
      this.mutate(id, async () => {
        if (await this.load(id)) fail('conflict', `node '${id}' already exists`);
        if (quota) checkNodeQuota((await this.store.getAffiliationsOf(bare)).filter((a) => a.affiliation === 'owner').length, this.limits);
        const record: NodeRecord = { id, config: nodeConfig, creator: bare, created: this.now() };
        await this.store.putNode(record);
        await this.store.setAffiliation(id, bare, 'owner');
        this.cache.delete(id);
        return id;
      });
    return quota ? this.ownerLocks.run(bare, createNode) : createNode();
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
      checkMaxItems(change.maxItems, this.limits);
      const refusal = change.accessModel === undefined ? undefined : rosterModelRefusal(config.accessModel, this.rosterSource, this.owners(state));
      if (refusal) fail('not-acceptable', refusal);
      const record: NodeRecord = { ...state.record, config };
      await this.store.putNode(record);
      state.record = record;
      const keep = nodeItemLimit(config, this.limits);
      if (keep === 0) await this.store.purgeItems(id);
      else await this.store.trimItems(id, keep);
      await this.dropUnauthorisedSubscriptions(state);
      // §8.2.5.3: with payloads the notification carries the new configuration.
      if (config.notifyConfig) this.emit(state, { kind: 'config', node: id, ...(config.deliverPayloads ? { config: { ...config } } : {}) }, await this.audience(state));
      this.expiry.set(id, config.itemExpire === 'max' ? undefined : await this.oldestExpiry(id, config.itemExpire));
    });
  }

  /** Deletes a node (§8.4); `redirect`: the URI of a replacement node, passed on to subscribers (§8.4.1). */
  async delete(actor: string, nodeId: string | undefined, redirect?: string): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'delete');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const recipients = state.record.config.notifyDelete ? await this.audience(state) : [];
      await this.store.deleteNode(id);
      this.cache.delete(id);
      this.expiry.set(id, undefined);
      this.leases.set(id, undefined);
      this.emit(state, { kind: 'delete', node: id, ...(redirect ? { redirect } : {}) }, recipients);
    });
  }

  async purge(actor: string, nodeId: string | undefined): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'purge');
    if (!checked.record.config.persistItems) fail('persistent-items-unsupported');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const { archiveId } = await this.store.purgeItems(id, { archive: { stamp: this.now(), keep: ARCHIVE_LIMIT } });
      if (state.record.config.notifyRetract) this.emit(state, { kind: 'purge', node: id, archiveId }, await this.audience(state));
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
      const rosters = await this.rostersFor(state);
      for (const change of changes) {
        if (change.state === 'subscribed' && !this.can(state, change.jid, 'subscribe', undefined, rosters)) {
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
            this.subscriptionChanged(state, sub, true);
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
      const changed: Array<{ jid: string; affiliation: Affiliation }> = [];
      for (const { jid, affiliation } of changes) {
        const bare = bareJid(jid);
        if ((state.affiliations.get(bare) ?? 'none') !== affiliation) changed.push({ jid: bare, affiliation });
        await this.store.setAffiliation(id, bare, affiliation);
        if (affiliation === 'none') state.affiliations.delete(bare);
        else state.affiliations.set(bare, affiliation);
      }
      await this.dropUnauthorisedSubscriptions(state);
      // §8.9.4: each entity whose affiliation changed is told (a partner learns of a node it may now read).
      for (const c of changed) this.emit(state, { kind: 'affiliation', node: id, ...c }, [{ jid: c.jid, subid: '' }]);
    });
  }

  /**
   * After an affiliation or access model change: removes (and tells) every subscription whose
   * JID may no longer subscribe, and approves pending ones that need no approval any more
   * (§8.7: e.g. the entity became a publisher).
   */
  private async dropUnauthorisedSubscriptions(state: NodeState): Promise<void> {
    const rosters = await this.rostersFor(state);
    for (const sub of [...state.subscriptions]) {
      if (!this.can(state, sub.jid, 'subscribe', undefined, rosters)) await this.removeSubscription(state, sub, true);
      else if (sub.state === 'pending' && !needsApproval(this.affiliationOf(state, sub.jid), state.record.config.accessModel)) {
        sub.state = 'subscribed';
        await this.store.putSubscription(sub);
        this.subscriptionChanged(state, sub, true);
      }
    }
  }

  // ---- entity use cases ------------------------------------------------------------------

  /**
   * Subscribes `jid`. Without options an existing subscription of the JID is returned as it is;
   * with options (subscribe-and-configure) one with the same options is returned, else a further
   * subscription with its own subid is made (multi-subscribe, §6.1.6).
   */
  async subscribe(actor: string, nodeId: string | undefined, jid: string, options?: Partial<SubscriptionOptions>): Promise<Subscription> {
    if (bareJid(jid) !== bareJid(actor)) fail('invalid-jid', 'the subscribed JID must have the bare JID of the requester');
    const checked = await this.node(nodeId);
    this.require(checked, jid, 'subscribe', await this.rostersFor(checked));
    const wanted = options && applySubscriptionOptions({ ...DEFAULT_SUBSCRIPTION_OPTIONS }, options, this.now());
    const id = checked.record.id;
    return this.mutate(id, async () => {
      const state = await this.node(id);
      this.require(state, jid, 'subscribe', await this.rostersFor(state));
      if (!state.record.config.subscribe) fail('subscriptions-unsupported', 'the node does not take subscriptions (pubsub#subscribe is 0)');
      const existing = state.subscriptions.filter((s) => s.jid === jid);
      if (existing.some((s) => s.state === 'pending')) fail('pending-subscription', 'the subscription waits for approval by an owner');
      const same = wanted ? existing.find((s) => sameOptions(optionsOf(s), wanted)) : existing[0];
      if (same) return { ...same };
      const approval = needsApproval(this.affiliationOf(state, jid), state.record.config.accessModel);
      const sub = await this.addSubscription(state, jid, approval ? 'pending' : 'subscribed', false, wanted);
      // §6.1.4: pending until an owner answers the §8.6 approval form sent to every owner.
      if (approval) this.askApproval(state, sub);
      else await this.sendLastPublished(state, sub);
      return { ...sub };
    });
  }

  /** The subscription whose options are asked for or changed (§6.3.4 error cases). */
  private optionsTarget(state: NodeState, actor: string, jid: string, subid: string | undefined): Subscription {
    if (bareJid(jid) !== bareJid(actor) && !this.can(state, actor, 'manage-subscriptions')) fail('forbidden', 'you may only see and change options of your own subscriptions');
    const subs = state.subscriptions.filter((s) => s.jid === jid);
    if (subs.length === 0) fail('not-subscribed');
    if (subid === undefined) {
      if (subs.length > 1) fail('subid-required');
      return subs[0] as Subscription;
    }
    const sub = subs.find((s) => s.subid === subid);
    if (!sub) fail('invalid-subid');
    return sub;
  }

  async getSubscriptionOptions(actor: string, nodeId: string | undefined, jid: string, subid: string | undefined): Promise<Subscription> {
    const state = await this.node(nodeId);
    const sub = this.optionsTarget(state, actor, jid, subid);
    return { ...sub, options: optionsOf(sub) };
  }

  async setSubscriptionOptions(actor: string, nodeId: string | undefined, jid: string, subid: string | undefined, change: Partial<SubscriptionOptions>): Promise<void> {
    const checked = await this.node(nodeId);
    this.optionsTarget(checked, actor, jid, subid);
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const sub = this.optionsTarget(state, actor, jid, subid);
      sub.options = applySubscriptionOptions(optionsOf(sub), change, this.now());
      await this.store.putSubscription(sub);
      this.leases.set(id, nextLeaseEnd(state.subscriptions));
    });
  }

  /** Ends the node's leased subscriptions that are due (subscriber told); answers the next end. */
  private endLeases(nodeId: string): Promise<number | undefined> {
    return this.mutate(nodeId, async () => {
      const state = await this.load(nodeId);
      if (!state) return undefined;
      const now = this.now();
      for (const sub of [...state.subscriptions]) {
        if (sub.options?.expire !== undefined && sub.options.expire <= now) await this.removeSubscription(state, sub, true);
      }
      return nextLeaseEnd(state.subscriptions);
    });
  }

  private askApproval(state: NodeState, sub: Subscription): void {
    const owners = this.owners(state).map((jid) => ({ jid, subid: sub.subid }));
    if (owners.length > 0) this.notifier({ kind: 'authorization', node: sub.node, subscription: { ...sub } }, owners);
  }

  /** §8.6: an owner approves or denies a pending subscription; the subscriber is told (§8.8.4). */
  async authorize(actor: string, nodeId: string | undefined, subid: string, jid: string, allow: boolean): Promise<void> {
    const checked = await this.node(nodeId);
    this.require(checked, actor, 'manage-subscriptions');
    const id = checked.record.id;
    await this.mutate(id, async () => {
      const state = await this.node(id);
      const sub = state.subscriptions.find((s) => s.subid === subid && s.jid === jid && s.state === 'pending');
      if (!sub) fail('item-not-found', `no pending subscription ${subid} of ${jid} to node '${id}'`);
      if (!allow) return this.removeSubscription(state, sub, true);
      sub.state = 'subscribed';
      await this.store.putSubscription(sub);
      this.subscriptionChanged(state, sub, true);
      await this.sendLastPublished(state, sub);
    });
  }

  /**
   * §6.1.7 send_last_published_item on_sub (and on_sub_and_presence): the newest item to a new
   * subscription, stamped; `to` (a resource of the subscriber) when it became available.
   */
  private async sendLastPublished(state: NodeState, sub: Subscription, to = sub.jid): Promise<boolean> {
    const { config } = state.record;
    if (config.sendLastPublishedItem === 'never' || !config.deliverNotifications || sub.options?.deliver === false || nodeItemLimit(config, this.limits) === 0) return false;
    const [last] = this.unexpired(config, await this.store.getItems(state.record.id, { max: 1 }));
    if (!last) return false;
    this.emit(state, { kind: 'items', node: state.record.id, item: last, withPayload: config.deliverPayloads, delayed: true }, [{ jid: to, subid: sub.subid }]);
    return true;
  }

  /**
   * `jid` (a full JID) became available, as the presence the XMPP layer receives says: every
   * node it (or its bare JID) is subscribed to with send_last_published_item on_sub_and_presence
   * sends it the newest item. Resolves to the number of items sent.
   */
  async entityAvailable(jid: string): Promise<number> {
    const bare = bareJid(jid);
    const done = new Set<string>();
    let sent = 0;
    for (const stored of await this.store.getSubscriptionsOf(bare)) {
      if ((stored.jid !== jid && stored.jid !== bare) || done.has(stored.node)) continue;
      const state = await this.load(stored.node);
      const sub = state?.subscriptions.find((s) => s.subid === stored.subid && s.state === 'subscribed');
      if (!state || !sub || state.record.config.sendLastPublishedItem !== 'on_sub_and_presence') continue;
      if (!this.can(state, jid, 'be-notified', true, await this.rostersFor(state))) continue;
      done.add(stored.node);
      if (await this.sendLastPublished(state, sub, jid)) sent++;
    }
    return sent;
  }

  /** Pending subscriptions of the nodes this entity owns (for get-pending). */
  async pendingOf(actor: string, nodeId?: string): Promise<Subscription[]> {
    if (nodeId !== undefined) {
      const state = await this.node(nodeId);
      this.require(state, actor, 'manage-subscriptions');
      return state.subscriptions.filter((s) => s.state === 'pending').map((s) => ({ ...s }));
    }
    const out: Subscription[] = [];
    for (const { node, affiliation } of await this.affiliationsOf(actor)) {
      if (affiliation !== 'owner') continue;
      const state = await this.load(node);
      for (const s of state?.subscriptions ?? []) if (s.state === 'pending') out.push({ ...s });
    }
    return out;
  }

  /** Sends the approval form again to the owners for every pending subscription of a node. */
  async resendApprovals(actor: string, nodeId: string | undefined): Promise<number> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'manage-subscriptions');
    const pending = state.subscriptions.filter((s) => s.state === 'pending');
    for (const sub of pending) this.notifier({ kind: 'authorization', node: sub.node, subscription: { ...sub } }, [{ jid: bareJid(actor), subid: sub.subid }]);
    return pending.length;
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

  private async addSubscription(state: NodeState, jid: string, subState: SubscriptionState, notify: boolean, options?: SubscriptionOptions): Promise<Subscription> {
    const sub: Subscription = { node: state.record.id, jid, subid: this.newId(), state: subState, ...(options ? { options } : {}) };
    await this.store.putSubscription(sub);
    state.subscriptions.push(sub);
    if (options?.expire !== undefined) this.leases.atLeastBy(sub.node, options.expire);
    this.subscriptionChanged(state, sub, notify);
    return sub;
  }

  private async removeSubscription(state: NodeState, sub: Subscription, notify: boolean): Promise<void> {
    await this.store.deleteSubscription(sub.node, sub.jid, sub.subid);
    state.subscriptions = state.subscriptions.filter((s) => s !== sub);
    this.subscriptionChanged(state, { ...sub, state: 'none' }, notify);
  }

  /**
   * A subscription was created, changed or ended: tell the entity (§8.8.4; regardless of the
   * access model) when `toSubscriber`, and the owners when the node has pubsub#notify_sub.
   */
  private subscriptionChanged(state: NodeState, sub: Subscription, toSubscriber: boolean): void {
    const event: ServiceEvent = { kind: 'subscription', node: sub.node, subscription: { ...sub }, messageType: state.record.config.notificationType };
    if (toSubscriber) this.notifier(event, [{ jid: sub.jid, subid: sub.subid }]);
    if (state.record.config.notifySub) {
      const owners: Recipient[] = [];
      for (const [jid, affiliation] of state.affiliations) if (affiliation === 'owner') owners.push({ jid, subid: sub.subid });
      if (owners.length > 0) this.notifier(event, owners);
    }
  }

  async getItems(actor: string, nodeId: string | undefined, query: ItemQuery = {}): Promise<Item[]> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'retrieve-items', await this.rostersFor(state));
    if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    return this.unexpired(state.record.config, await this.store.getItems(state.record.id, query));
  }

  /**
   * Leaves out items past the node's pubsub#item_expire that its expiry timer has not removed
   * yet (right after a restart, before the timers are restored, or while the timer is late).
   */
  private unexpired(config: NodeConfig, items: Item[]): Item[] {
    if (config.itemExpire === 'max') return items;
    const cutoff = this.now() - config.itemExpire * 1000;
    return items.filter((item) => item.published > cutoff);
  }

  /** The checks of an item page and the store's page of ids; item-not-found for an unknown anchor. */
  private async itemIdPage(actor: string, nodeId: string | undefined, page: PageRequest): Promise<{ state: NodeState; ids: Page<string> }> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'retrieve-items', await this.rostersFor(state));
    if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    const found = await this.store.pageItemIds(state.record.id, { ...page, max: Math.min(page.max, PAGE_LIMIT) });
    if (!found) fail('item-not-found', `item '${page.after ?? page.before ?? ''}' is not in node '${state.record.id}': page from a known item`);
    return { state, ids: found };
  }

  /** The items of a page of ids, without those past their expiry. */
  private async liveItems(state: NodeState, ids: string[]): Promise<Item[]> {
    return ids.length === 0 ? [] : this.unexpired(state.record.config, await this.store.getItems(state.record.id, { ids }));
  }

  /**
   * One page of a node's item ids in publication order (at most PAGE_LIMIT). An after/before id
   * that is no longer in the node is item-not-found: its position is unknown (XEP-0059 §2.5).
   * Costs O(log n) in the node's size wherever the page is (Store.pageItemIds).
   */
  async pageItemIds(actor: string, nodeId: string | undefined, page: PageRequest = { max: PAGE_LIMIT }): Promise<Page<string>> {
    const { state, ids } = await this.itemIdPage(actor, nodeId, page);
    if (state.record.config.itemExpire === 'max') return ids;
    return { ...ids, entries: (await this.liveItems(state, ids.entries)).map((item) => item.id) };
  }

  /** One page of a node's items (see pageItemIds). */
  async pageItems(actor: string, nodeId: string | undefined, page: PageRequest = { max: PAGE_LIMIT }): Promise<Page<Item>> {
    const { state, ids } = await this.itemIdPage(actor, nodeId, page);
    return { ...ids, entries: await this.liveItems(state, ids.entries) };
  }

  /**
   * XEP-0313 on a node (XEP-0442): one page of its history — publications and tombstones of
   * retracted, expired or purged items — for whoever may retrieve its items.
   */
  async queryArchive(actor: string, nodeId: string | undefined, query: ArchiveQuery, page: PageRequest = { max: ARCHIVE_PAGE_LIMIT }): Promise<Page<ArchiveEntry>> {
    const state = await this.node(nodeId);
    this.require(state, actor, 'retrieve-items', await this.rostersFor(state));
    if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    const found = await this.store.pageArchive(state.record.id, query, { ...page, max: Math.min(page.max, ARCHIVE_PAGE_LIMIT) });
    if (!found) fail('item-not-found', `an archive id of the query is not in the archive of node '${state.record.id}'`);
    return found;
  }

  /**
   * Publishes an item (§7.1); resolves to its id, or undefined on a transient notification-only
   * node, where a publish carries no item and only triggers a notification (§4.3). Errors:
   * forbidden, item-not-found, item-required / payload-required / item-forbidden (publish-rules.ts),
   * precondition-not-met, payload-too-big, node-full, rate-limited.
   */
  async publish(actor: string, nodeId: string | undefined, request: PublishRequest): Promise<string | undefined> {
    const checked = await this.node(nodeId);
    this.requirePublish(checked, actor);
    if (this.publishRate && !this.admins.has(bareJid(actor))) checkPublishRate(this.publishRate, bareJid(actor));
    const { item } = request;
    checkPublishShape(checked.record.config, item);
    const id = checked.record.id;
    return this.mutate(id, async () => {
      const state = await this.node(id);
      this.requirePublish(state, actor);
      const nodeConfig = state.record.config;
      checkPublishShape(nodeConfig, item); // the configuration may have changed meanwhile
      this.checkPreconditions(nodeConfig, request.preconditions ?? {});
      if (isNotificationOnlyTransient(nodeConfig)) {
        // §4.3: no item, no item id; subscribers get an empty <items/>.
        if (nodeConfig.deliverNotifications) this.emit(state, { kind: 'items', node: id, withPayload: false }, await this.audience(state));
        return undefined;
      }
      const payload = item?.payload ?? '';
      if (Buffer.byteLength(payload) > nodeConfig.maxPayloadSize) fail('payload-too-big', `the payload is larger than the node's pubsub#max_payload_size of ${nodeConfig.maxPayloadSize} bytes`);
      const keep = nodeItemLimit(nodeConfig, this.limits);
      await checkNodeFull(this.store, id, nodeConfig, item?.id, keep);
      const published: Item = { id: item?.id || this.newId(), payload, publisher: bareJid(actor), published: this.now() };
      let archiveId: string | undefined;
      if (keep > 0) {
        ({ archiveId } = await this.store.publishItem(id, published, { keep, archive: { keep: ARCHIVE_LIMIT } }));
        if (nodeConfig.itemExpire !== 'max') this.expiry.atLeastBy(id, published.published + nodeConfig.itemExpire * 1000);
      }
      if (nodeConfig.deliverNotifications) {
        this.emit(state, { kind: 'items', node: id, item: published, withPayload: nodeConfig.deliverPayloads, ...(archiveId ? { archiveId } : {}) }, await this.audience(state));
      }
      return published.id;
    });
  }

  /** §7.1.5: every precondition must equal the node's configuration. */
  private checkPreconditions(config: NodeConfig, preconditions: Partial<NodeConfig>): void {
    for (const [key, wanted] of Object.entries(preconditions) as Array<[keyof NodeConfig, unknown]>) {
      if (config[key] !== wanted && JSON.stringify(config[key]) !== JSON.stringify(wanted)) fail('precondition-not-met', `the node's ${key} is ${String(config[key])}, not ${String(wanted)}`);
    }
  }

  // ---- item expiry (pubsub#item_expire) --------------------------------------------------

  /** When the node's oldest item expires (undefined: no items). */
  private async oldestExpiry(nodeId: string, itemExpire: number): Promise<number | undefined> {
    const oldest = await this.store.pageItemIds(nodeId, { max: 1 });
    const first = oldest?.entries[0];
    if (first === undefined) return undefined;
    const [item] = await this.store.getItems(nodeId, { ids: [first] });
    return item ? item.published + itemExpire * 1000 : undefined;
  }

  /** Removes a node's expired items (oldest first), tells subscribers; answers the next due time. */
  private expireItems(nodeId: string): Promise<number | undefined> {
    return this.mutate(nodeId, async () => {
      const state = await this.load(nodeId);
      const expire = state?.record.config.itemExpire;
      if (!state || expire === undefined || expire === 'max') return undefined;
      const now = this.now();
      const due: string[] = [];
      let next: number | undefined;
      for (let after: string | undefined; ; ) {
        const page = await this.store.pageItemIds(nodeId, { max: 100, ...(after !== undefined ? { after } : {}) });
        const items = await this.store.getItems(nodeId, { ids: page?.entries ?? [] });
        for (const item of items) {
          const at = item.published + expire * 1000;
          if (at > now) {
            next = at;
            break;
          }
          due.push(item.id);
        }
        after = items.at(-1)?.id;
        if (next !== undefined || after === undefined) break;
      }
      // One write for every expired item and its tombstone.
      if (due.length > 0) {
        const { retracted, archiveId } = await this.store.retractItems(nodeId, due, { archive: { stamp: now, keep: ARCHIVE_LIMIT } });
        if (retracted.length > 0 && state.record.config.notifyRetract) this.emit(state, { kind: 'retract', node: nodeId, itemIds: retracted, archiveId }, await this.audience(state));
      }
      return next;
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
      const { retracted, archiveId } = await this.store.retractItems(id, itemIds, { archive: { stamp: this.now(), keep: ARCHIVE_LIMIT } });
      if (notify ?? state.record.config.notifyRetract) this.emit(state, { kind: 'retract', node: id, itemIds: retracted, archiveId }, await this.audience(state));
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

  /**
   * Ends every subscription held by exactly this JID, on every node (XEP-0060 §4.4: its
   * notifications keep bouncing). The JID is not told (it cannot be reached); owners with
   * pubsub#notify_sub are. Resolves to the subscriptions ended.
   */
  async dropUnreachable(jid: string): Promise<Subscription[]> {
    const dropped: Subscription[] = [];
    const nodes = new Set((await this.store.getSubscriptionsOf(bareJid(jid))).filter((s) => s.jid === jid).map((s) => s.node));
    for (const id of nodes) {
      await this.mutate(id, async () => {
        const state = await this.load(id);
        for (const sub of state?.subscriptions.filter((s) => s.jid === jid) ?? []) {
          await this.removeSubscription(state as NodeState, sub, false);
          dropped.push(sub);
        }
      });
    }
    return dropped;
  }
}

/** The earliest end of a leased subscription among these (undefined: none is leased). */
function nextLeaseEnd(subs: Subscription[]): number | undefined {
  let next: number | undefined;
  for (const sub of subs) {
    const end = sub.options?.expire;
    if (end !== undefined && (next === undefined || end < next)) next = end;
  }
  return next;
}
