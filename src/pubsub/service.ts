// The pub/sub service core (XEP-0060 semantics, no XMPP wire format). Every operation takes the
// acting JID, asks the capability table, changes the Store and hands events to the injected
// Notifier. Errors are PubsubError names; the XMPP layer maps them to stanzas.
//
// Hot node state (record, affiliations, subscriptions) is cached in an LRU and written through:
// the service is the only writer of its store. Changes to one node are serialised, so a
// notification is always computed from the state that the change produced (node-state.ts: the
// cache, the per-node locks and the check → lock → re-check helper `guarded`). Who may act and
// who is notified (affiliations, capability table, owners' rosters, presence) is audience.ts.
//
// Units: times are milliseconds since the epoch (ServiceOptions.now), durations in the node
// configuration are seconds as XEP-0060 names them (pubsub#item_expire), sizes are bytes (UTF-8).
// Errors are the PubsubError names of errors.ts; each public method lists those it raises.
//
// Time-driven work (item_expire, leased subscriptions) runs on ExpiryScheduler timers that
// start() re-arms from the store; every change to items is also appended to the node's archive
// (publications and tombstones) for MAM queries.

import { randomUUID } from 'node:crypto';
import type { ArchiveQuery, ItemQuery, Page, PageRequest, Store } from '../store/store.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { bareJid } from '../util/bare-jid.ts';
import { needsRoster, type PresenceView, type RosterSource } from './access.ts';
import { Audience } from './audience.ts';
import { OneCopyLedger } from './one-copy.ts';
import { needsApproval, type Action } from './capabilities.ts';
import { ExpiryScheduler, realTimers, type Timers } from './expiry.ts';
import { fail, PubsubError } from './errors.ts';
import { checkMaxItems, checkNodeQuota, checkPublishRate, NO_LIMITS, nodeItemLimit, RateLimiter, type Limits } from './limits.ts';
import { applyConfig, DEFAULT_NODE_CONFIG } from './node-config.ts';
import { NodeStates, type NodeState } from './node-state.ts';
import { checkPublishShape, isNotificationOnlyTransient, NodeRoom } from './publish-rules.ts';
import { applySubscriptionOptions, DEFAULT_SUBSCRIPTION_OPTIONS, optionsOf, sameOptions } from './subscription-options.ts';
import {
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
  /** Node ids the service's JID uses for something else (XEP-0050 command nodes): no node may be created with them. */
  reservedNodeIds?: ReadonlySet<string>;
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
  /**
   * Whether this process runs the timers (item expiry, lease ends) now: with several Hermods on
   * one store only the work-lease holder does (src/cluster/cluster.ts), and calls start() when it
   * becomes holder. A due timer in another process is dropped. Absent: always.
   */
  runsTimers?: () => boolean;
}

export interface PublishRequest {
  /** Absent when the publish has no <item/> at all. */
  item?: { id?: string; payload?: string };
  /** §7.1.5 publish-options: the node's configuration must have these values. */
  preconditions?: Partial<NodeConfig>;
}

/** How one request of PubsubService.publishMany ended: its item id (undefined: a transient notification-only node), or why it was refused. */
export type PublishOutcome = { id: string | undefined } | { error: PubsubError };

export interface NodeMetadata {
  record: NodeRecord;
  owners: string[];
  publishers: string[];
  subscriberCount: number;
}

const NODE_ID_MAX = 1023;
/**
 * Longest item id (characters), as node ids: an id is kept in the item's key, the order index
 * and the archive, outside pubsub#max_payload_size.
 */
const ITEM_ID_MAX = 1023;
/**
 * Most subscriptions to one node held by one bare JID (all resources, all options: §6.1.6
 * multi-subscribe), and most pending subscriptions one node holds (each sends every owner an
 * approval form): beyond, `too-many-subscriptions` (§6.1.3.13) — each costs the store, the cached
 * node state and a notification per publication.
 */
export const SUBSCRIPTIONS_PER_JID = 64;
export const PENDING_PER_NODE = 1000;
/** Most pending subscriptions of one bare JID to a node (so that a few cannot fill PENDING_PER_NODE). */
export const PENDING_PER_JID = 4;
/** Most item ids one request names (§6.5.8 items by id, §7.2 retract): a page's worth. */
const IDS_PER_REQUEST = 1000;

/** The distinct ids of a request (items, retractions, archive ids), in their order; not-acceptable beyond IDS_PER_REQUEST. */
function distinctIds(ids: readonly string[]): string[] {
  const distinct = [...new Set(ids)];
  if (distinct.length > IDS_PER_REQUEST) fail('not-acceptable', `at most ${IDS_PER_REQUEST} item ids per request (${distinct.length} named)`);
  return distinct;
}

/** Most items (or ids, or nodes) one answer carries; larger results are paged (XEP-0059). */
export const PAGE_LIMIT = 1000;
/** Most archive entries one MAM answer carries (one message each). */
export const ARCHIVE_PAGE_LIMIT = 250;
/** Archive entries kept per node (publications and tombstones); the oldest go first. */
export const ARCHIVE_LIMIT = 100_000;

export class PubsubService {
  private readonly store: Store;
  private readonly notifier: Notifier;
  private readonly mayCreateNodes: (bare: string) => boolean;
  private readonly reservedNodeIds: ReadonlySet<string> | undefined;
  private readonly defaults: NodeConfig;
  private readonly now: () => number;
  private readonly newId: () => string;
  private readonly nodes: NodeStates;
  private readonly audience: Audience;
  private readonly expiry: ExpiryScheduler;
  /** Leased subscriptions (pubsub#expire), per node. */
  private readonly leases: ExpiryScheduler;
  private readonly limits: Limits;
  private readonly publishRate: RateLimiter | undefined;
  /** Creations per owner are serialised so that the node quota holds under concurrency. */
  private readonly ownerLocks = new KeyedMutex();
  private readonly runsTimers: () => boolean;
  /** Who was sent which recent payload through a one-copy subscription (one-copy.ts). */
  private readonly oneCopy = new OneCopyLedger();

  /** Errors: `not-acceptable` when nodeDefaults.maxItems is above limits.maxItemsPerNode. */
  constructor(options: ServiceOptions) {
    this.store = options.store;
    this.notifier = options.notifier;
    this.mayCreateNodes = options.mayCreateNodes;
    this.reservedNodeIds = options.reservedNodeIds;
    this.defaults = applyConfig({ ...DEFAULT_NODE_CONFIG }, options.nodeDefaults ?? {});
    this.limits = { ...NO_LIMITS, ...options.limits };
    checkMaxItems(this.defaults.maxItems, this.limits);
    this.now = options.now ?? Date.now;
    this.runsTimers = options.runsTimers ?? (() => true);
    this.newId = options.newId ?? randomUUID;
    this.nodes = new NodeStates(options.store, options.cacheNodes ?? 10_000);
    const timers = options.timers ?? (options.now ? { ...realTimers, now: options.now } : realTimers);
    const onError = options.onError ?? ((err: unknown) => process.emitWarning(`pubsub background work failed: ${String(err)}`));
    this.expiry = new ExpiryScheduler(timers, (node) => this.expireItems(node), onError);
    this.leases = new ExpiryScheduler(timers, (node) => this.endLeases(node), onError);
    this.audience = new Audience({
      admins: new Set([...(options.admins ?? [])].map(bareJid)),
      onError,
      ...(options.rosters ? { rosters: options.rosters } : {}),
      ...(options.presence ? { presence: options.presence } : {}),
    });
    if (this.limits.publishRate) this.publishRate = new RateLimiter(this.limits.publishRate, this.now);
  }

  /**
   * Restores background work from the store's timer index (Store.timerIndex): lease-end timers
   * at once, item-expiry timers after reading each expiring node's oldest item. Reads only the
   * nodes that have item expiry or leases, never every node. Call once after opening; may run
   * while requests are served (timers are only ever brought forward, and reads leave out items
   * past their expiry until the timer removes them). Errors: none of its own (rejects when the
   * store cannot be read).
   */
  async start(): Promise<void> {
    const { itemExpiry, leaseEnds } = await this.store.timerIndex();
    for (const [node, end] of leaseEnds) this.leases.atLeastBy(node, end);
    for (const [node, expire] of itemExpiry) {
      const due = await this.oldestExpiry(node, expire);
      if (due !== undefined) this.expiry.atLeastBy(node, due);
    }
  }

  /** Resolves when every change under way has finished (for clean shutdown). Errors: none. */
  idle(): Promise<void> {
    return this.nodes.idle();
  }

  /** Stops background work and waits for changes under way. Errors: none. */
  async close(): Promise<void> {
    this.expiry.stop();
    this.leases.stop();
    await this.nodes.idle();
    this.nodes.close();
  }

  // ---- helpers ---------------------------------------------------------------------------

  private emit(state: NodeState, event: ServiceEvent, recipients: Recipient[]): void {
    if (recipients.length > 0) this.notifier({ ...event, messageType: state.record.config.notificationType }, recipients);
  }

  /** The node's state. Errors: `nodeid-required`, `item-not-found` (no such node). */
  private node(nodeId: string | undefined): Promise<NodeState> {
    return this.nodes.node(nodeId);
  }

  /** A guarded change (NodeStates.guarded) whose check is that `actor` may do `action`. */
  private guardedAction<T>(actor: string, nodeId: string | undefined, action: Action, change: (state: NodeState) => Promise<T>): Promise<T> {
    return this.nodes.guarded(nodeId, (state) => this.audience.require(state, actor, action), change);
  }

  // ---- discovery -----------------------------------------------------------------------

  /** Every node's record (disco#items without paging). Errors: none of its own (store failures reject). */
  async listNodes(): Promise<NodeRecord[]> {
    return this.store.listNodes();
  }

  /** One page of the nodes, in id order (XEP-0059; `page.max` is capped at PAGE_LIMIT). Errors: none of its own. */
  async pageNodes(page: PageRequest = { max: PAGE_LIMIT }): Promise<Page<NodeRecord>> {
    return this.store.pageNodes({ ...page, max: Math.min(page.max, PAGE_LIMIT) });
  }

  /**
   * A node's record with its owners and publishers (bare JIDs) and the number of approved
   * subscriptions, for disco#info and XEP-0128 meta-data (§5.4). Errors: `nodeid-required`,
   * `item-not-found`.
   */
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

  /** The access models offered now (§4.5): presence and roster only while a server grants roster access. Errors: none. */
  accessModels(): AccessModel[] {
    return this.audience.accessModels();
  }

  /** The configuration a new node gets (§8.3; a copy). Errors: none. */
  defaultConfig(): NodeConfig {
    return { ...this.defaults };
  }

  // ---- owner use cases -------------------------------------------------------------------

  /**
   * Creates a node (§8.1) owned by `actor`'s bare JID, with `config` over the service defaults
   * (§8.1.3); `nodeId` absent: an instant node with a generated id (§8.1.2). Resolves to the id.
   * Errors: `forbidden` (may not create nodes here), `not-acceptable` (id longer than 1023
   * characters, a configuration value not supported, max_items above the service limit, a roster
   * model without roster privilege), `conflict` (the node exists, or its id is reserved:
   * `reservedNodeIds`), `max-nodes-exceeded`.
   */
  async create(actor: string, nodeId: string | undefined, config: Partial<NodeConfig> = {}): Promise<string> {
    const bare = bareJid(actor);
    const admin = this.audience.isAdmin(bare);
    if (!admin && !this.mayCreateNodes(bare)) fail('forbidden', 'you may not create nodes on this service');
    const id = nodeId ?? this.newId();
    if (id.length > NODE_ID_MAX) fail('not-acceptable', `node id longer than ${NODE_ID_MAX} characters`);
    if (this.reservedNodeIds?.has(id)) fail('conflict', `node id ${id} is taken by the service itself (an ad-hoc command node)`);
    const nodeConfig = applyConfig(this.defaults, config);
    checkMaxItems(nodeConfig.maxItems, this.limits);
    const refusal = this.audience.modelRefusal(nodeConfig.accessModel, [bare]);
    if (refusal) fail('not-acceptable', refusal);
    const quota = !admin && this.limits.maxNodesPerOwner !== Infinity;
    const createNode = (): Promise<string> =>
      this.nodes.mutate(id, async () => {
        if (await this.nodes.load(id)) fail('conflict', `node '${id}' already exists`);
        if (quota) checkNodeQuota((await this.store.getAffiliationsOf(bare)).filter((a) => a.affiliation === 'owner').length, this.limits);
        const record: NodeRecord = { id, config: nodeConfig, creator: bare, created: this.now() };
        await this.store.putNode(record);
        await this.store.setAffiliation(id, bare, 'owner');
        this.nodes.forget(id);
        return id;
      });
    return quota ? this.ownerLocks.run(bare, createNode) : createNode();
  }

  /**
   * The node's configuration (§8.2; a copy). Errors: `nodeid-required`, `item-not-found`,
   * `forbidden` (owners only).
   */
  async getConfig(actor: string, nodeId: string | undefined): Promise<NodeConfig> {
    const state = await this.nodes.read(nodeId, (s) => this.audience.require(s, actor, 'configure'));
    return { ...state.record.config };
  }

  /**
   * Changes the node's configuration (§8.2.4): items over the new max_items go, subscriptions the
   * new access model refuses end (their JIDs are told), subscribers are told when notify_config.
   * Errors: `nodeid-required`, `item-not-found`, `forbidden` (owners only), `not-acceptable` (a
   * value not supported, max_items above the service limit, a roster model without privilege).
   */
  async configure(actor: string, nodeId: string | undefined, change: Partial<NodeConfig>): Promise<void> {
    await this.guardedAction(actor, nodeId, 'configure', async (state) => {
      const id = state.record.id;
      const config = applyConfig(state.record.config, change);
      checkMaxItems(change.maxItems, this.limits);
      const refusal = change.accessModel === undefined ? undefined : this.audience.modelRefusal(config.accessModel, this.audience.owners(state));
      if (refusal) fail('not-acceptable', refusal);
      const record: NodeRecord = { ...state.record, config };
      await this.store.putNode(record);
      state.record = record;
      const keep = nodeItemLimit(config, this.limits);
      if (keep === 0) await this.store.purgeItems(id);
      else await this.store.trimItems(id, keep);
      await this.dropUnauthorisedSubscriptions(state);
      // §8.2.5.3: with payloads the notification carries the new configuration.
      if (config.notifyConfig) this.emit(state, { kind: 'config', node: id, ...(config.deliverPayloads ? { config: { ...config } } : {}) }, await this.audience.of(state));
      this.expiry.set(id, config.itemExpire === 'max' ? undefined : await this.oldestExpiry(id, config.itemExpire));
    });
  }

  /**
   * Deletes a node (§8.4); `redirect`: the URI of a replacement node, passed on to subscribers
   * (§8.4.1). Errors: `nodeid-required`, `item-not-found`, `forbidden` (owners only).
   */
  async delete(actor: string, nodeId: string | undefined, redirect?: string): Promise<void> {
    await this.guardedAction(actor, nodeId, 'delete', async (state) => {
      const id = state.record.id;
      const recipients = state.record.config.notifyDelete ? this.withPending(state, await this.audience.of(state)) : [];
      await this.store.deleteNode(id);
      this.nodes.forget(id);
      this.expiry.set(id, undefined);
      this.leases.set(id, undefined);
      this.emit(state, { kind: 'delete', node: id, ...(redirect ? { redirect } : {}) }, recipients);
    });
  }

  /**
   * `recipients` and every JID holding a subscription that is not (yet) active — pending
   * approval, or unconfigured — that is not among them: §8.4.2, node deletion is sent to all
   * subscribers, which "SHOULD include pending and unconfigured subscriptions".
   */
  private withPending(state: NodeState, recipients: Recipient[]): Recipient[] {
    const out = [...recipients];
    const told = new Set(recipients.map((r) => r.jid));
    for (const sub of state.subscriptions) {
      if (sub.state === 'subscribed' || told.has(sub.jid)) continue;
      told.add(sub.jid);
      out.push({ jid: sub.jid, subid: sub.subid });
    }
    return out;
  }

  /**
   * Removes every item of the node (§8.5; tombstones in its archive). Errors: `nodeid-required`,
   * `item-not-found`, `forbidden` (owners only), `persistent-items-unsupported` (persist_items=0).
   */
  async purge(actor: string, nodeId: string | undefined): Promise<void> {
    const check = (state: NodeState): void => {
      this.audience.require(state, actor, 'purge');
      if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    };
    await this.nodes.guarded(nodeId, check, async (state) => {
      const id = state.record.id;
      const { archiveId } = await this.store.purgeItems(id, { archive: { stamp: this.now(), keep: ARCHIVE_LIMIT } });
      if (state.record.config.notifyRetract) this.emit(state, { kind: 'purge', node: id, archiveId }, await this.audience.of(state));
    });
  }

  /**
   * Every subscription to the node, pending ones too (§8.8.1; copies). Errors: `nodeid-required`,
   * `item-not-found`, `forbidden` (owners only).
   */
  async getSubscriptions(actor: string, nodeId: string | undefined): Promise<Subscription[]> {
    const state = await this.nodes.read(nodeId, (s) => this.audience.require(s, actor, 'manage-subscriptions'));
    return state.subscriptions.map((s) => ({ ...s }));
  }

  /**
   * Owner changes subscriptions (§8.8.2): state 'none' removes (one subid, or all of the JID),
   * 'subscribed' adds or approves; each JID is told. All or nothing. Errors: `nodeid-required`,
   * `item-not-found`, `forbidden` (owners only), `not-acceptable` (a JID that may not subscribe, another
   * state, an unknown subid, more than IDS_PER_REQUEST changes: each is a store write under the node's lock).
   */
  async setSubscriptions(actor: string, nodeId: string | undefined, changes: Array<{ jid: string; subid?: string; state: SubscriptionState }>): Promise<void> {
    if (changes.length > IDS_PER_REQUEST) fail('not-acceptable', `at most ${IDS_PER_REQUEST} subscriptions per request (${changes.length} named)`);
    await this.guardedAction(actor, nodeId, 'manage-subscriptions', async (state) => {
      const rosters = await this.audience.rostersFor(state);
      for (const change of changes) {
        if (change.state === 'subscribed' && !this.audience.can(state, change.jid, 'subscribe', undefined, rosters)) {
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
          await this.sendLastPublished(state, await this.addSubscription(state, change.jid, 'subscribed', true));
        } else {
          for (const sub of existing) if (sub.state !== 'subscribed') await this.approve(state, sub);
        }
      }
    });
  }

  /**
   * The node's affiliations (§8.9.1; bare JID -> affiliation, a copy). Errors: `nodeid-required`,
   * `item-not-found`, `forbidden` (owners only).
   */
  async getAffiliations(actor: string, nodeId: string | undefined): Promise<Map<string, Affiliation>> {
    const state = await this.nodes.read(nodeId, (s) => this.audience.require(s, actor, 'manage-affiliations'));
    return new Map(state.affiliations);
  }

  /**
   * Owner changes affiliations (§8.9.2; JIDs taken bare, 'none' removes), all or nothing. Takes
   * effect at once on subscriptions; each entity whose affiliation changed is told (§8.9.4).
   * Errors: `nodeid-required`, `item-not-found`, `forbidden` (owners only), `not-acceptable` (the
   * node would be left without an owner, more than IDS_PER_REQUEST changes).
   */
  async setAffiliations(actor: string, nodeId: string | undefined, changes: Array<{ jid: string; affiliation: Affiliation }>): Promise<void> {
    if (changes.length > IDS_PER_REQUEST) fail('not-acceptable', `at most ${IDS_PER_REQUEST} affiliations per request (${changes.length} named)`);
    await this.guardedAction(actor, nodeId, 'manage-affiliations', async (state) => {
      const id = state.record.id;
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
   * (§8.7: e.g. the entity became a publisher). While an owner's roster cannot be read (its
   * server does not answer now), a subscription only a roster could allow is kept: a removal
   * cannot be undone. Its notifications and item requests are checked against the roster each
   * time (refused while it cannot be read); the next change that reads the roster decides on it.
   */
  private async dropUnauthorisedSubscriptions(state: NodeState): Promise<void> {
    const unread: string[] = [];
    const rosters = await this.audience.rostersFor(state, unread);
    const rosterUnknown = unread.length > 0 && needsRoster(state.record.config.accessModel);
    for (const sub of [...state.subscriptions]) {
      if (!this.audience.can(state, sub.jid, 'subscribe', undefined, rosters)) {
        if (rosterUnknown && this.audience.affiliationOf(state, sub.jid) === 'none') continue;
        await this.removeSubscription(state, sub, true);
      } else if (sub.state === 'pending' && !needsApproval(this.audience.affiliationOf(state, sub.jid), state.record.config.accessModel)) await this.approve(state, sub);
    }
  }

  /**
   * A pending subscription becomes approved; the subscriber (and owners with notify_sub) told,
   * then sent the last published item ("Item Caching": it SHOULD be sent upon approval by a node
   * owner — by the §8.6 form, by a §8.8.2 subscription change, or when its affiliation or the
   * access model no longer needs approval).
   */
  private async approve(state: NodeState, sub: Subscription): Promise<void> {
    sub.state = 'subscribed';
    await this.store.putSubscription(sub);
    this.subscriptionChanged(state, sub, true);
    await this.sendLastPublished(state, sub);
  }

  // ---- entity use cases ------------------------------------------------------------------

  /**
   * Subscribes `jid` (§6.1; same bare JID as `actor`). Without options an existing subscription
   * of the JID is returned as it is; with options (subscribe-and-configure, §6.3.7) one with the
   * same options is returned, else a further subscription with its own subid is made
   * (multi-subscribe, §6.1.6). On an authorize node the new subscription is pending and the
   * owners get the §8.6 approval form. `options.expire`: lease end, ms since the epoch.
   * Errors: `invalid-jid` (not the requester's bare JID), `nodeid-required`, `item-not-found`,
   * `forbidden`, `closed-node`, `presence-subscription-required`, `not-in-roster-group`,
   * `invalid-options`, `subscriptions-unsupported` (pubsub#subscribe=0), `pending-subscription`,
   * `too-many-subscriptions` (SUBSCRIPTIONS_PER_JID, PENDING_PER_JID, PENDING_PER_NODE).
   */
  async subscribe(actor: string, nodeId: string | undefined, jid: string, options?: Partial<SubscriptionOptions>): Promise<Subscription> {
    if (bareJid(jid) !== bareJid(actor)) fail('invalid-jid', 'the subscribed JID must have the bare JID of the requester');
    let wanted: SubscriptionOptions | undefined;
    const check = async (state: NodeState, locked: boolean): Promise<void> => {
      await this.audience.requireWithRosters(state, jid, 'subscribe');
      if (!locked) wanted = options && applySubscriptionOptions({ ...DEFAULT_SUBSCRIPTION_OPTIONS }, options, this.now());
    };
    return this.nodes.guarded(nodeId, check, async (state) => {
      if (!state.record.config.subscribe) fail('subscriptions-unsupported', 'the node does not take subscriptions (pubsub#subscribe is 0)');
      const existing = state.subscriptions.filter((s) => s.jid === jid);
      if (existing.some((s) => s.state === 'pending')) fail('pending-subscription', 'the subscription waits for approval by an owner');
      const same = wanted ? existing.find((s) => sameOptions(optionsOf(s), wanted as SubscriptionOptions)) : existing[0];
      if (same) return { ...same };
      const approval = needsApproval(this.audience.affiliationOf(state, jid), state.record.config.accessModel);
      const bare = bareJid(jid);
      let held = 0;
      let pending = 0;
      let pendingHere = 0;
      for (const s of state.subscriptions) {
        const mine = bareJid(s.jid) === bare;
        if (mine) held++;
        if (s.state === 'pending') {
          pending++;
          if (mine) pendingHere++;
        }
      }
      if (held >= SUBSCRIPTIONS_PER_JID) fail('too-many-subscriptions', `at most ${SUBSCRIPTIONS_PER_JID} subscriptions to a node per bare JID`);
      if (approval && pendingHere >= PENDING_PER_JID) fail('too-many-subscriptions', `at most ${PENDING_PER_JID} subscriptions of one bare JID wait for approval`);
      if (approval && pending >= PENDING_PER_NODE) fail('too-many-subscriptions', `the node has ${PENDING_PER_NODE} subscriptions waiting for approval: try again later`);
      const sub = await this.addSubscription(state, jid, approval ? 'pending' : 'subscribed', false, wanted);
      // §6.1.4: pending until an owner answers the §8.6 approval form sent to every owner.
      if (approval) this.askApproval(state, sub);
      else await this.sendLastPublished(state, sub);
      return { ...sub };
    });
  }

  /** The subscription whose options are asked for or changed (§6.3.4 error cases). */
  private optionsTarget(state: NodeState, actor: string, jid: string, subid: string | undefined): Subscription {
    if (bareJid(jid) !== bareJid(actor) && !this.audience.can(state, actor, 'manage-subscriptions')) fail('forbidden', 'you may only see and change options of your own subscriptions');
    return this.subscriptionOf(state, jid, subid);
  }

  /** The subscription of `jid` named by `subid` (optional when the JID has one). Errors: `not-subscribed`, `subid-required`, `invalid-subid`. */
  private subscriptionOf(state: NodeState, jid: string, subid: string | undefined): Subscription {
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

  /**
   * A subscription with its options filled in (§6.3; defaults where unset). Errors:
   * `nodeid-required`, `item-not-found`, `forbidden` (another entity's, unless an owner),
   * `not-subscribed`, `subid-required`, `invalid-subid`.
   */
  async getSubscriptionOptions(actor: string, nodeId: string | undefined, jid: string, subid: string | undefined): Promise<Subscription> {
    const state = await this.nodes.read(nodeId, (s) => this.optionsTarget(s, actor, jid, subid));
    const sub = this.optionsTarget(state, actor, jid, subid);
    return { ...sub, options: optionsOf(sub) };
  }

  /**
   * Changes a subscription's options (§6.3.5; `change.expire`: lease end, ms since the epoch).
   * Errors: `nodeid-required`, `item-not-found`, `forbidden` (another entity's, unless an owner),
   * `not-subscribed`, `subid-required`, `invalid-subid`, `invalid-options`.
   */
  async setSubscriptionOptions(actor: string, nodeId: string | undefined, jid: string, subid: string | undefined, change: Partial<SubscriptionOptions>): Promise<void> {
    await this.nodes.guarded(
      nodeId,
      (state) => this.optionsTarget(state, actor, jid, subid),
      async (state, sub) => {
        sub.options = applySubscriptionOptions(optionsOf(sub), change, this.now());
        await this.store.putSubscription(sub);
        this.leases.set(state.record.id, nextLeaseEnd(state.subscriptions));
      },
    );
  }

  /** Ends the node's leased subscriptions that are due (subscriber told); answers the next end. */
  private endLeases(nodeId: string): Promise<number | undefined> {
    if (!this.runsTimers()) return Promise.resolve(undefined); // the lease holder does it
    return this.nodes.mutate(nodeId, async () => {
      const state = await this.nodes.load(nodeId);
      if (!state) return undefined;
      const now = this.now();
      for (const sub of [...state.subscriptions]) {
        if (sub.options?.expire !== undefined && sub.options.expire <= now) await this.removeSubscription(state, sub, true);
      }
      return nextLeaseEnd(state.subscriptions);
    });
  }

  private askApproval(state: NodeState, sub: Subscription): void {
    const owners = this.audience.owners(state).map((jid) => ({ jid, subid: sub.subid }));
    if (owners.length > 0) this.notifier({ kind: 'authorization', node: sub.node, subscription: { ...sub } }, owners);
  }

  /**
   * §8.6: an owner approves or denies a pending subscription; the subscriber is told (§8.8.4).
   * Errors: `nodeid-required`, `item-not-found` (no such node, or no such pending subscription),
   * `forbidden` (owners only).
   */
  async authorize(actor: string, nodeId: string | undefined, subid: string, jid: string, allow: boolean): Promise<void> {
    await this.guardedAction(actor, nodeId, 'manage-subscriptions', async (state) => {
      const sub = state.subscriptions.find((s) => s.subid === subid && s.jid === jid && s.state === 'pending');
      if (!sub) fail('item-not-found', `no pending subscription ${subid} of ${jid} to node '${state.record.id}'`);
      if (!allow) return this.removeSubscription(state, sub, true);
      await this.approve(state, sub);
    });
  }

  /**
   * §6.1.7 send_last_published_item on_sub (and on_sub_and_presence): the newest item to a new
   * subscription, stamped; `to` (a resource of the subscriber) when it became available.
   */
  private async sendLastPublished(state: NodeState, sub: Subscription, to = sub.jid): Promise<boolean> {
    const { config } = state.record;
    if (config.sendLastPublishedItem === 'never' || !config.deliverNotifications || sub.options?.deliver === false || nodeItemLimit(config, this.limits) === 0) return false;
    // §12 presence-based delivery: not to a subscriber not known to be available (an owner approving it while it is offline).
    if (config.presenceBasedDelivery && !this.audience.available(to)) return false;
    const [last] = this.unexpired(config, await this.store.getItems(state.record.id, { max: 1 }));
    if (!last) return false;
    // §7.1.2.4: a JID subscribed several times is told (SHIM SubID) which subscription this is for.
    const several = state.subscriptions.filter((s) => s.jid === sub.jid).length > 1;
    this.emit(state, { kind: 'items', node: state.record.id, item: last, withPayload: config.deliverPayloads, delayed: true }, [{ jid: to, subid: sub.subid, ...(several ? { subids: [sub.subid] } : {}), ...(sub.options?.packed === true ? { packed: true as const } : {}) }]);
    return true;
  }

  /**
   * `jid` (a full JID) became available, as the presence the XMPP layer receives says: every
   * node it (or its bare JID) is subscribed to with send_last_published_item on_sub_and_presence
   * sends it the newest item. Resolves to the number of items sent. Errors: none of its own.
   */
  async entityAvailable(jid: string): Promise<number> {
    const bare = bareJid(jid);
    const done = new Set<string>();
    let sent = 0;
    for (const stored of await this.store.getSubscriptionsOf(bare)) {
      if ((stored.jid !== jid && stored.jid !== bare) || done.has(stored.node)) continue;
      const state = await this.nodes.load(stored.node);
      const sub = state?.subscriptions.find((s) => s.subid === stored.subid && s.state === 'subscribed');
      if (!state || !sub || state.record.config.sendLastPublishedItem !== 'on_sub_and_presence') continue;
      if (!this.audience.can(state, jid, 'be-notified', true, await this.audience.rostersFor(state))) continue;
      // Once per node: the first subscription that delivers (a paused one, deliver=0, does not
      // stand for the JID's other subscriptions to the node).
      if (await this.sendLastPublished(state, sub, jid)) {
        done.add(stored.node);
        sent++;
      }
    }
    return sent;
  }

  /** Whether `actor`'s bare JID is a service admin (pubsub.admins: an owner of every node). Errors: none. */
  isAdmin(actor: string): boolean {
    return this.audience.isAdmin(bareJid(actor));
  }

  /**
   * Pending subscriptions (§8.7 get-pending; copies): of one node, or of every node `actor`
   * owns. Errors (with a node): `nodeid-required`, `item-not-found`, `forbidden` (owners only).
   */
  async pendingOf(actor: string, nodeId?: string): Promise<Subscription[]> {
    if (nodeId !== undefined) {
      const state = await this.nodes.read(nodeId, (s) => this.audience.require(s, actor, 'manage-subscriptions'));
      return state.subscriptions.filter((s) => s.state === 'pending').map((s) => ({ ...s }));
    }
    const out: Subscription[] = [];
    for (const { node, affiliation } of await this.affiliationsOf(actor)) {
      if (affiliation !== 'owner') continue;
      const state = await this.nodes.load(node);
      for (const s of state?.subscriptions ?? []) if (s.state === 'pending') out.push({ ...s });
    }
    return out;
  }

  /**
   * Sends the approval form again to `actor` for every pending subscription of a node (§8.7);
   * resolves to how many. Errors: `nodeid-required`, `item-not-found`, `forbidden` (owners only).
   */
  async resendApprovals(actor: string, nodeId: string | undefined): Promise<number> {
    const state = await this.nodes.read(nodeId, (s) => this.audience.require(s, actor, 'manage-subscriptions'));
    const pending = state.subscriptions.filter((s) => s.state === 'pending');
    for (const sub of pending) this.notifier({ kind: 'authorization', node: sub.node, subscription: { ...sub } }, [{ jid: bareJid(actor), subid: sub.subid }]);
    return pending.length;
  }

  /**
   * Ends a subscription of `jid` (§6.2; `subid` optional when the JID has one). Errors:
   * `nodeid-required`, `item-not-found`, `forbidden` (another entity's, unless an owner),
   * `not-subscribed`, `subid-required`, `invalid-subid`.
   */
  async unsubscribe(actor: string, nodeId: string | undefined, jid: string, subid: string | undefined): Promise<void> {
    const check = (state: NodeState): void => {
      if (bareJid(jid) !== bareJid(actor) && !this.audience.can(state, actor, 'manage-subscriptions')) fail('forbidden', 'you may only unsubscribe your own JID');
    };
    await this.nodes.guarded(nodeId, check, (state) => this.removeSubscription(state, this.subscriptionOf(state, jid, subid), false));
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
      const owners: Recipient[] = this.audience.owners(state).map((jid) => ({ jid, subid: sub.subid }));
      if (owners.length > 0) this.notifier(event, owners);
    }
  }

  // ---- items ------------------------------------------------------------------------------

  /** The node's state once `actor` may retrieve its items. */
  private async readable(actor: string, nodeId: string | undefined): Promise<NodeState> {
    const state = await this.nodes.read(nodeId, (s) => this.audience.requireWithRosters(s, actor, 'retrieve-items'));
    if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    return state;
  }

  /**
   * Items of a node (§6.5), newest first, without those past their pubsub#item_expire;
   * `query.ids` for given items (each once, at most 1000), `query.max` for the newest few.
   * Errors: `nodeid-required`, `item-not-found`, `forbidden`, `closed-node`,
   * `presence-subscription-required`, `not-in-roster-group`, `must-subscribe` (authorize node),
   * `persistent-items-unsupported`, `not-acceptable` (more than 1000 ids).
   */
  async getItems(actor: string, nodeId: string | undefined, query: ItemQuery = {}): Promise<Item[]> {
    const state = await this.readable(actor, nodeId);
    const asked = query.ids ? { ...query, ids: distinctIds(query.ids) } : query;
    return this.unexpired(state.record.config, await this.store.getItems(state.record.id, asked));
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
    const state = await this.readable(actor, nodeId);
    const found = await this.store.pageItemIds(state.record.id, { ...page, max: Math.min(page.max, PAGE_LIMIT) });
    if (!found) fail('item-not-found', `item '${page.after ?? page.before ?? ''}' is not in node '${state.record.id}': page from a known item`);
    return { state, ids: found };
  }

  /** The items of a page of ids, without those past their expiry. */
  private async liveItems(state: NodeState, ids: string[]): Promise<Item[]> {
    return ids.length === 0 ? [] : this.unexpired(state.record.config, await this.store.getItems(state.record.id, { ids }));
  }

  /**
   * One page of a node's item ids in publication order (XEP-0059; `page.max` capped at
   * PAGE_LIMIT). An after/before id that is no longer in the node is item-not-found: its
   * position is unknown (XEP-0059 §2.5). Costs O(log n) in the node's size wherever the page is
   * (Store.pageItemIds). Errors: `nodeid-required`, `item-not-found` (no such node, or an
   * unknown after/before id), `forbidden`, `closed-node`, `presence-subscription-required`,
   * `not-in-roster-group`, `must-subscribe`, `persistent-items-unsupported`.
   */
  async pageItemIds(actor: string, nodeId: string | undefined, page: PageRequest = { max: PAGE_LIMIT }): Promise<Page<string>> {
    const { state, ids } = await this.itemIdPage(actor, nodeId, page);
    if (state.record.config.itemExpire === 'max') return ids;
    return { ...ids, entries: (await this.liveItems(state, ids.entries)).map((item) => item.id) };
  }

  /**
   * One page of a node's items (as pageItemIds, with the items). Errors: `nodeid-required`,
   * `item-not-found`, `forbidden`, `closed-node`, `presence-subscription-required`,
   * `not-in-roster-group`, `must-subscribe`, `persistent-items-unsupported`.
   */
  async pageItems(actor: string, nodeId: string | undefined, page: PageRequest = { max: PAGE_LIMIT }): Promise<Page<Item>> {
    const { state, ids } = await this.itemIdPage(actor, nodeId, page);
    return { ...ids, entries: await this.liveItems(state, ids.entries) };
  }

  /**
   * XEP-0313 on a node (XEP-0442): one page of its history — publications and tombstones of
   * retracted, expired or purged items — for whoever may retrieve its items (`page.max` capped
   * at ARCHIVE_PAGE_LIMIT; `query` times in ms since the epoch). Errors: `nodeid-required`,
   * `item-not-found` (no such node, or an archive id not in the archive), `forbidden`,
   * `closed-node`, `presence-subscription-required`, `not-in-roster-group`, `must-subscribe`,
   * `persistent-items-unsupported`, `not-acceptable` (`query.ids` naming more than 1000 ids; each counts once).
   */
  async queryArchive(actor: string, nodeId: string | undefined, query: ArchiveQuery, page: PageRequest = { max: ARCHIVE_PAGE_LIMIT }): Promise<Page<ArchiveEntry>> {
    const state = await this.readable(actor, nodeId);
    const asked = query.ids ? { ...query, ids: distinctIds(query.ids) } : query;
    const found = await this.store.pageArchive(state.record.id, asked, { ...page, max: Math.min(page.max, ARCHIVE_PAGE_LIMIT) });
    if (!found) fail('item-not-found', `an archive id of the query is not in the archive of node '${state.record.id}'`);
    return found;
  }

  /**
   * Publishes an item (§7.1): resolves to its id (the given one, or a generated one), or
   * undefined on a transient notification-only node, where a publish carries no item and only
   * triggers a notification (§4.3). `request.item.payload`: the item's XML as a string, at most
   * pubsub#max_payload_size bytes (UTF-8). One store batch (item, trim to max_items, archive
   * entry); subscribers are notified once it is written. (publishMany of one request.)
   * Errors: `nodeid-required`, `item-not-found` (no such node), `forbidden` (publish model or
   * outcast), `rate-limited` (limits.publishRate), `item-required`, `payload-required`,
   * `item-forbidden` (the node's event type, §7.1.3.6–7: publish-rules.ts), `precondition-not-met`
   * (§7.1.5), `payload-too-big`, `node-full` (publish_node_full=reject, §7.1.3.4),
   * `not-acceptable` (an item id longer than 1023 characters).
   */
  async publish(actor: string, nodeId: string | undefined, request: PublishRequest): Promise<string | undefined> {
    const [outcome] = await this.publishMany(actor, nodeId, [request]);
    if (outcome && 'error' in outcome) throw outcome.error;
    return outcome?.id;
  }

  /**
   * Publishes several items to one node (§7.1) under ONE acquisition of the node's lock and
   * with ONE store write (Store.publishMany: the items, the order index, max_items trimming, one
   * archive entry per item), with the result of the same publish() calls in this order: each
   * request is checked on its own (rate, §7.1.3 shape, §7.1.5 preconditions, payload size,
   * publish_node_full counting the items accepted before it), an item id given twice ends up
   * once (the later payload, as newest), and subscribers get one notification per accepted
   * item, in order, once the write is done (the audience is computed once for the batch; a
   * one-copy subscriber just sent the same id and payload through another node gets it without
   * payload: one-copy.ts).
   * Resolves to one outcome per request, in order: `{id}` (undefined id: a transient
   * notification-only node, §4.3) or `{error}`, the PubsubError that publish() would have raised
   * for that request alone (rate-limited, item-required, payload-required, item-forbidden,
   * precondition-not-met, payload-too-big, node-full); a refused request does not stop the
   * others. What concerns the whole batch rejects it, with nothing written and nobody notified
   * (as does the store's error when the write fails).
   * Errors: `nodeid-required`, `item-not-found` (no such node), `forbidden` (publish model or
   * outcast).
   */
  async publishMany(actor: string, nodeId: string | undefined, requests: PublishRequest[]): Promise<PublishOutcome[]> {
    const publisher = bareJid(actor);
    let rated: Array<PubsubError | undefined> | undefined;
    const check = (state: NodeState): Promise<void> => this.audience.requirePublishWithRosters(state, actor);
    return this.nodes.guarded(nodeId, check, async (state) => {
      const id = state.record.id;
      const nodeConfig = state.record.config;
      const keep = nodeItemLimit(nodeConfig, this.limits);
      const transient = isNotificationOnlyTransient(nodeConfig);
      const room = transient ? undefined : await NodeRoom.of(this.store, id, nodeConfig, keep, requests);
      const outcomes: PublishOutcome[] = [];
      const accepted: Item[] = [];
      for (const [i, { item, preconditions }] of requests.entries()) {
        try {
          const refusal = rated?.[i];
          if (refusal) throw refusal;
          checkPublishShape(nodeConfig, item);
          this.checkPreconditions(nodeConfig, preconditions ?? {});
          if (transient) {
            outcomes.push({ id: undefined });
            continue;
          }
          const payload = item?.payload ?? '';
          if (item?.id !== undefined && item.id.length > ITEM_ID_MAX) fail('not-acceptable', `item id longer than ${ITEM_ID_MAX} characters`);
          if (Buffer.byteLength(payload) > nodeConfig.maxPayloadSize) fail('payload-too-big', `the payload is larger than the node's pubsub#max_payload_size of ${nodeConfig.maxPayloadSize} bytes`);
          room?.admit(item?.id);
          const published: Item = { id: item?.id || this.newId(), payload, publisher, published: this.now() };
          accepted.push(published);
          outcomes.push({ id: published.id });
        } catch (err) {
          if (!(err instanceof PubsubError)) throw err;
          outcomes.push({ error: err });
        }
      }
      let archiveIds: string[] = [];
      if (keep > 0 && accepted.length > 0) {
        ({ archiveIds } = await this.store.publishMany(id, accepted, { keep, archive: { keep: ARCHIVE_LIMIT } }));
        if (nodeConfig.itemExpire !== 'max') this.expiry.atLeastBy(id, (accepted[0] as Item).published + nodeConfig.itemExpire * 1000);
      }
      const notified = transient ? outcomes.filter((o) => !('error' in o)).length : accepted.length;
      if (!nodeConfig.deliverNotifications || notified === 0) return outcomes;
      const recipients = await this.audience.of(state);
      if (transient) {
        // §4.3: no item, no item id; subscribers get an empty <items/>.
        for (let n = 0; n < notified; n++) this.emit(state, { kind: 'items', node: id, withPayload: false }, recipients);
        return outcomes;
      }
      for (const [n, published] of accepted.entries()) {
        const archiveId = archiveIds[n];
        const event = { kind: 'items' as const, node: id, item: published, withPayload: nodeConfig.deliverPayloads, ...(archiveId ? { archiveId } : {}) };
        if (!nodeConfig.deliverPayloads) {
          this.emit(state, event, recipients);
          continue;
        }
        // One-copy subscribers just sent this payload through another node get it without (one-copy.ts).
        const { full, stubs } = this.oneCopy.split(id, published, recipients);
        this.emit(state, event, full);
        if (stubs.length > 0) this.emit(state, { ...event, item: { ...published, payload: '' }, withPayload: false }, stubs);
      }
      return outcomes;
    }, () => {
      // One rate token per request, taken once the publish is allowed (`once`: not again when a refusal is decided again).
      const refusals: Array<PubsubError | undefined> = []; // a loop, not map(): src/util/hot-loops.md
      for (let n = 0; n < requests.length; n++) refusals.push(this.rateRefusal(publisher));
      rated = refusals;
    });
  }

  /** The refusal limits.publishRate makes of one more publish by `publisher` now (taking a token when not refused); admins are exempt. */
  private rateRefusal(publisher: string): PubsubError | undefined {
    if (!this.publishRate || this.audience.isAdmin(publisher)) return undefined;
    try {
      checkPublishRate(this.publishRate, publisher);
      return undefined;
    } catch (err) {
      if (err instanceof PubsubError) return err;
      throw err;
    }
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
    if (!this.runsTimers()) return Promise.resolve(undefined); // the lease holder does it
    return this.nodes.mutate(nodeId, async () => {
      const state = await this.nodes.load(nodeId);
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
        if (retracted.length > 0 && state.record.config.notifyRetract) this.emit(state, { kind: 'retract', node: nodeId, itemIds: retracted, archiveId }, await this.audience.of(state));
      }
      return next;
    });
  }

  /**
   * Retracts items (§7.2; tombstones in the archive); `notify` undefined means: as the node's
   * notify_retract says; an id named twice counts once. Errors: `item-required` (no ids),
   * `not-acceptable` (more than 1000 ids), `nodeid-required`, `item-not-found` (no such node, or
   * an id not in it), `forbidden` (may not retract, or another publisher's item without
   * retract-any), `persistent-items-unsupported`.
   */
  async retract(actor: string, nodeId: string | undefined, itemIds: string[], notify: boolean | undefined): Promise<void> {
    if (itemIds.length === 0) fail('item-required');
    itemIds = distinctIds(itemIds);
    const check = (state: NodeState): void => {
      // Who may not retract at all is told so first (§7.2.3.1), whatever the node keeps.
      if (!this.audience.can(state, actor, 'retract-any') && !this.audience.can(state, actor, 'retract-own')) fail('forbidden');
      if (!state.record.config.persistItems) fail('persistent-items-unsupported');
    };
    await this.nodes.guarded(nodeId, check, async (state) => {
      const id = state.record.id;
      const mayRetractAny = this.audience.can(state, actor, 'retract-any');
      if (!mayRetractAny && !this.audience.can(state, actor, 'retract-own')) fail('forbidden');
      const found = await this.store.getItems(id, { ids: itemIds });
      if (found.length !== new Set(itemIds).size) {
        const missing = itemIds.filter((i) => !found.some((f) => f.id === i));
        fail('item-not-found', `no item ${missing.join(', ')} in node '${id}'`);
      }
      if (!mayRetractAny && found.some((item) => item.publisher !== bareJid(actor))) fail('forbidden', 'you may only retract your own items');
      const { retracted, archiveId } = await this.store.retractItems(id, itemIds, { archive: { stamp: this.now(), keep: ARCHIVE_LIMIT } });
      if (notify ?? state.record.config.notifyRetract) this.emit(state, { kind: 'retract', node: id, itemIds: retracted, archiveId }, await this.audience.of(state));
    });
  }

  /**
   * The subscriptions held by `actor`'s bare JID (§5.6), on one node or all. Errors (with a
   * node): `nodeid-required`, `item-not-found`.
   */
  async subscriptionsOf(actor: string, nodeId?: string): Promise<Subscription[]> {
    if (nodeId !== undefined) await this.node(nodeId);
    const subs = await this.store.getSubscriptionsOf(bareJid(actor));
    return nodeId === undefined ? subs : subs.filter((s) => s.node === nodeId);
  }

  /**
   * The affiliations of `actor`'s bare JID (§5.7), on one node ('owner' for admins) or all.
   * Errors (with a node): `nodeid-required`, `item-not-found`.
   */
  async affiliationsOf(actor: string, nodeId?: string): Promise<Array<{ node: string; affiliation: Affiliation }>> {
    if (nodeId !== undefined) {
      const state = await this.node(nodeId);
      const affiliation = this.audience.affiliationOf(state, actor);
      return affiliation === 'none' ? [] : [{ node: nodeId, affiliation }];
    }
    return this.store.getAffiliationsOf(bareJid(actor));
  }

  /**
   * Ends every subscription held by exactly this JID, on every node (XEP-0060 §4.4: its
   * notifications keep bouncing). The JID is not told (it cannot be reached); owners with
   * pubsub#notify_sub are. Resolves to the subscriptions ended. Errors: none of its own.
   */
  async dropUnreachable(jid: string): Promise<Subscription[]> {
    const dropped: Subscription[] = [];
    const nodes = new Set((await this.store.getSubscriptionsOf(bareJid(jid))).filter((s) => s.jid === jid).map((s) => s.node));
    for (const id of nodes) {
      await this.nodes.mutate(id, async () => {
        const state = await this.nodes.load(id);
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
