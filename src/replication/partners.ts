// Subscribing side: partners are contacts that carry a JID. For each, Hermod discovers the
// partner's Hermod service (the JID itself if it is one, else the services on the JID's domain
// that identify as pubsub/service with HERMOD_FEATURE), lists its tag nodes, subscribes (as the
// component JID) to those the partner settings say to follow, and catches up on each node's
// items — at start, at an interval, when a contact or partner setting changes, and again within
// seconds after a failed attempt (backoff from 2 s doubling up to the interval).
// New nodes are followed as soon as the partner's service announces them with standard XEP-0060
// messages: the affiliation notification of §8.9.4 (an owner made us a member of a node: how a
// whitelisted tag's new node reaches us) or the subscription notification of §8.8 (an owner
// subscribed us). One from a service not discovered yet starts a discovery of that partner.
// Notifications are accepted only from a service/node we subscribed to; the sink writes them.
// Each one that carries its archive id (XEP-0359 stanza-id by the service) moves the node's
// history position forward once it and everything received before it were applied, so a
// restart replays only what was missed. A catch-up (the node's items on a first follow, its
// history after a restart) reads only what came before the notifications: it stops at the first
// item or history entry that reached us live, since everything after it in publication order
// reaches us live too (while a partner publishes a large database, catching up to the end read
// every item twice).
// Generic over what is replicated: Ajatus and Midgard each give it a PartnerSink (how a leaf or
// a retraction is written locally), which partner nodes they replicate, and partner settings.
// Every request to a partner's service goes through a PubsubClient (src/xmpp/pubsub-client.ts).
// A service's nodes are followed FOLLOWS_AT_ONCE at a time (a first sync of one does not hold
// back the others); stop() ends catch-ups at their next page (the position stays where the last
// applied page left it), so stopping does not wait for a first sync to finish.
// Beside it: follow-delivery.ts (a followed node's catch-up, live notifications, drains and
// re-reads: everything from a notification's arrival to the sink), catch-up-rules.ts (what a
// catch-up takes of a page while notifications arrive), one-copy-follows.ts (notifications
// without payload of one-copy subscriptions), subscription-setup.ts (our subscriptions'
// options: digests, one copy, packed, delivery).

import type { Element } from 'ltx';
import type { IqCaller } from '../component/iq-caller.ts';
import { IqError } from '../xmpp/iq-error.ts';
import type { Logger } from '../log.ts';
import { normalizeJid, parseJid } from '../xmpp/jid.ts';
import { NS } from '../xmpp/ns.ts';
import { PubsubClient } from '../xmpp/pubsub-client.ts';
import { unpackPayloads } from '../xmpp/packed.ts';
import { ServiceOwners, type ServiceOwnerRecords } from './service-owners.ts';
import { FollowDelivery, type CatchUpStart, type Followed, type HistoryPositions } from './follow-delivery.ts';
import { OneCopyFollows } from './one-copy-follows.ts';
import { PAYLOAD_WAIT_MS } from './payloads-seen.ts';
import type { PartnerSink } from '../sinks/sink.ts';
import type { PartnerSettings } from './settings.ts';
import { SubscriptionClaims, type ClaimHolder } from './subscription-claims.ts';
import { SubscriptionSetup } from './subscription-setup.ts';

/** Disco feature by which Hermod services recognise each other. */
export const HERMOD_FEATURE = 'urn:hermod:replication:0';

export type { HistoryPositions } from './follow-delivery.ts';

/** Where per-partner settings come from (ajatus_db documents, or the config file for Midgard). */
export interface PartnerSettingsSource {
  partner(jid: string): PartnerSettings;
  on(event: 'partner', listener: () => void): unknown;
}

export interface PartnerManagerOptions {
  iq: IqCaller;
  self: string;
  settings: PartnerSettingsSource;
  sink: PartnerSink;
  log: Logger;
  intervalMs: number;
  /** Whether a partner's node is one this replication follows by default (e.g. `/tags/…`); nodes a partner's `follow` list names are followed whatever they are. */
  offers: (node: string) => boolean;
  /** Whether a subscription may run now (false: paused, e.g. its stylesheet does not compile). */
  mayFollow?: (partner: string, node: string) => Promise<boolean>;
  /** Where to remember history positions; without it catch-up reads the node's current items only. */
  positions?: HistoryPositions;
  /** Where to remember which partner each service belongs to (service-owners.ts; the carrier lookup after a restart). */
  owners?: ServiceOwnerRecords;
  /**
   * Ask partners' services for notification digests with this pubsub#digest_frequency (ms), where
   * their subscription options form offers pubsub#digest; undefined or 0: one notification per item.
   */
  digestMs?: number;
  /**
   * Whether to ask partners' services for packed payloads (`{urn:hermod:pubsub:0}packed`,
   * src/xmpp/packed.ts) where their subscription options form offers it; false turns it off at
   * every subscription set up (a way back to a Hermod that cannot read them). Default true.
   */
  packed?: boolean;
  /**
   * Most live items (publications and retractions) handed to the sink and not yet written, over
   * every followed node, before further notifications are left to the nodes' history (see
   * FollowDelivery.leaveToHistory). Default LIVE_BACKLOG_ITEMS.
   */
  liveBacklogItems?: number;
  /**
   * Whether the items of a partner's node are handled as those of every other node of that
   * partner that says so (no stylesheet of its own): then an item published to several of them
   * may come with its payload once, through one of them (`{urn:hermod:pubsub:0}one_copy`, asked
   * where the service's subscription options offer it; src/pubsub/one-copy.ts). Absent: never.
   */
  oneCopy?: (partner: string | undefined, node: string) => boolean;
  /** How long a notification without payload on such a node waits for the payload through another node before fetching the item (ms). Default: PAYLOAD_WAIT_MS, or two digest windows and a second if longer. */
  payloadWaitMs?: number;
  /**
   * The replications on this component JID (subscription-claims.ts), which share its
   * subscriptions: one that this replication ends (no longer wanted, or left by an earlier run) is
   * kept while another follows the node, its drains do not pause such a subscription, and a
   * subscribe waits for an unsubscribe of the node under way. Absent: this one is alone.
   */
  claims?: SubscriptionClaims;
}

/** Smallest delay of a retried discovery (doubling up to the interval). */
export const DISCOVERY_RETRY_MS = 2000;
/** Nodes of one partner service subscribed to and caught up on at the same time. */
export const FOLLOWS_AT_ONCE = 4;
/**
 * Default bound of live items waiting for the sink (PartnerManagerOptions.liveBacklogItems): a
 * few of the sink's flushes (250 revisions each), some tens of MiB of parsed notifications.
 */
export const LIVE_BACKLOG_ITEMS = 2000;
/** Affiliations that let an entity read a node's items (XEP-0060 §4.1). */
const READERS = new Set(['owner', 'publisher', 'member']);

const key = (service: string, node: string): string => `${service}\0${node}`;

export class PartnerManager implements ClaimHolder {
  private readonly partners = new Set<string>();
  private readonly followed = new Map<string, Followed>();
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private started = false;
  /** Per service, per partner: the nodes its last discovery wanted (their follow may have failed: not ended, tried again). */
  private readonly wantedBy = new Map<string, Map<string, Set<string>>>();
  /** Subscriptions nobody follows are to be ended (endStaleSubscriptions) once the discovery under way is done. */
  private sweepDue = false;
  /** "service node" of subscriptions the sweep ended (or found ended) in this run: not asked again until followed again. */
  private readonly swept = new Set<string>();
  /**
   * Subscriptions at a removed partner's services whose unsubscribe got no answer that decides
   * (IqError.undecided: a timeout, the server down): asked again (leaveAgain), by key(service,
   * node), until one does. The sweep of stale subscriptions only looks at current partners'
   * services.
   */
  private readonly leaving = new Map<string, { service: string; node: string }>();
  private leaveTimer: NodeJS.Timeout | undefined;
  /** A leaveAgain is under way (one at a time: it arms the next when done). */
  private leavingNow = false;
  /** The wait before the next leaveAgain (ms): DISCOVERY_RETRY_MS, doubled up to intervalMs; 0 while nothing is left to end. */
  private leaveDelayMs = 0;
  /** Partners with follow "none" whose services were looked up in this run (once: an unreachable one costs request timeouts). */
  private readonly resolvedNone = new Set<string>();
  /** The replications on this JID (o.claims, or this one alone): who follows what, unsubscribes under way. */
  private readonly claims: SubscriptionClaims;
  /** Discover every partner in the next run (else only those in `due`). */
  private all = false;
  private readonly due = new Set<string>();
  /** Partners whose last discovery failed -> the delay that was waited (ms) and when to try again (epoch ms). */
  private readonly failing = new Map<string, { delayMs: number; at: number }>();
  /** Services that advertise MAM on nodes. */
  private readonly withHistory = new Set<string>();
  /** Which partner (contact JID) each discovered service belongs to. */
  private readonly partnerOf = new Map<string, string>();
  /** The same, kept durably from run to run (service-owners.ts). */
  private readonly owners: ServiceOwners;
  /** Partners whose discovery completed in this run (what they want is followed now). */
  private readonly discovered = new Set<string>();
  /** Partners whose last discovery could not tell whether a service recorded for them is still there. */
  private readonly discoveredIncomplete = new Set<string>();
  /** How long a notification without payload waits for its payload: at least two digest windows of the other node and a second. */
  private get payloadWaitMs(): number {
    return this.o.payloadWaitMs ?? Math.max(PAYLOAD_WAIT_MS, 2 * (this.o.digestMs ?? 0) + 1000);
  }
  /** Aborted by stop(): notifications without payload stop waiting for theirs. */
  private readonly stopping = new AbortController();
  /** Requests to partners' services, as the component JID. */
  readonly client: PubsubClient;
  /** Catch-ups, live notifications, drains and re-reads of the followed nodes (follow-delivery.ts). */
  private readonly delivery: FollowDelivery;
  /** Notifications of one-copy subscriptions: payloads once, the others without (one-copy-follows.ts). */
  private readonly oneCopy: OneCopyFollows;
  /** Our subscriptions' options: digests, one copy, packed, delivery (subscription-setup.ts). */
  private readonly setup: SubscriptionSetup;

  constructor(private readonly o: PartnerManagerOptions) {
    this.client = new PubsubClient(o.iq, o.self);
    this.owners = new ServiceOwners(o.owners, o.log);
    this.setup = new SubscriptionSetup({
      client: this.client,
      log: o.log,
      ...(o.digestMs !== undefined ? { digestMs: o.digestMs } : {}),
      ...(o.packed !== undefined ? { packed: o.packed } : {}),
      oneCopy: (service, node) => o.oneCopy?.(this.partnerOf.get(service), node) === true,
    });
    // For the process's life: while it stops, what it follows still counts for the other one.
    this.claims = o.claims ?? new SubscriptionClaims();
    this.claims.add(this);
    this.oneCopy = new OneCopyFollows({
      client: this.client,
      sink: o.sink,
      log: o.log,
      waitMs: this.payloadWaitMs,
      applies: (partner, node) => o.oneCopy?.(partner, node) === true,
      partnerOf: (service) => this.partnerOf.get(service),
      followed: (service, node) => this.followed.get(key(service, node)),
      stopped: () => this.stopped,
      signal: this.stopping.signal,
      pause: (ms) => this.delivery.pause(ms),
      track: (task) => this.delivery.track(task),
      reread: (service, node, ids) => {
        const f = this.followed.get(key(service, node));
        if (f) this.delivery.rereadItems(f, ids);
      },
    });
    this.delivery = new FollowDelivery({
      client: this.client,
      sink: o.sink,
      log: o.log,
      ...(o.positions ? { positions: o.positions } : {}),
      backlogBound: o.liveBacklogItems ?? LIVE_BACKLOG_ITEMS,
      retryFirstMs: DISCOVERY_RETRY_MS,
      intervalMs: o.intervalMs,
      oneCopy: this.oneCopy,
      followed: (service, node) => this.followed.get(key(service, node)),
      forget: (f) => this.forget(f),
      partnerOf: (service) => this.partnerOf.get(service),
      isPartner: (jid) => this.partners.has(jid),
      withHistory: (service) => this.withHistory.has(service),
      stopped: () => this.stopped,
      setDelivery: (f, deliver) => this.setDelivery(f, deliver),
      discoverSoon: (partner) => this.discoverSoon(partner),
    });
  }

  /** Subscriptions in force, as "service node" strings (for status and tests). */
  subscriptions(): string[] {
    return [...this.followed.values()].map((f) => `${f.service} ${f.node}`).sort();
  }

  /** The nodes followed now, as [service, node] pairs, by service then node (a carrier named in a log line is the same every run). */
  followedNodes(): Array<readonly [string, string]> {
    return [...this.followed.values()].map((f) => [f.service, f.node] as const).sort(([s1, n1], [s2, n2]) => (s1 < s2 ? -1 : s1 > s2 ? 1 : n1 < n2 ? -1 : n1 > n2 ? 1 : 0));
  }

  /** The partner (contact JID) a discovered service belongs to, if known. */
  partnerOfService(service: string): string | undefined {
    return this.partnerOf.get(service);
  }

  /**
   * While a service's nodes followed in an earlier run may not be followed again yet (right after
   * a restart): the partner it belonged to at its last discovery — this run's or an earlier
   * one's (kept in the replication state) — if that contact is a partner now and its discovery
   * has not completed in this run; undefined otherwise (then what it wants is followed now).
   */
  earlierOwnerOf(service: string): string | undefined {
    const owner = this.owners.ownerOf(service);
    return owner !== undefined && this.partners.has(owner) && !this.discovered.has(owner) ? owner : undefined;
  }

  /** Whether earlierOwnerOf may name an owner now: a partner with recorded services whose discovery has not completed in this run (and that follows something). */
  discoveryIncomplete(): boolean {
    for (const owner of this.owners.owners()) if (this.partners.has(owner) && !this.discovered.has(owner) && this.o.settings.partner(owner).follow !== 'none') return true;
    return false;
  }

  /** Whether a contact JID is a partner now. */
  isPartner(jid: string): boolean {
    return this.partners.has(jid);
  }

  addPartner(raw: string): void {
    const jid = normalizeJid(raw);
    if (!jid) {
      this.o.log.warn('contact JID is not valid; ignored', { jid: raw });
      return;
    }
    if (this.partners.has(jid)) {
      // The contact changed (any edit): its services and nodes may have too.
      this.o.log.debug('partner contact changed; discovering it again', { jid });
      this.discoverSoon(jid);
      return;
    }
    this.partners.add(jid);
    this.o.log.info('partner found', { jid });
    this.discoverSoon(jid);
  }

  /**
   * Ends a partnership: no more discovery for that JID, and every node of its services is
   * unsubscribed and no longer accepted (after the discovery under way, which may still add some).
   */
  async removePartner(raw: string): Promise<void> {
    const jid = normalizeJid(raw);
    if (!jid || !this.partners.delete(jid)) return;
    await this.running;
    this.discovered.delete(jid);
    this.discoveredIncomplete.delete(jid);
    const services = [...this.partnerOf].filter(([, p]) => p === jid).map(([service]) => service);
    for (const service of services) this.partnerOf.delete(service);
    await this.owners.removed(jid);
    for (const byPartner of this.wantedBy.values()) byPartner.delete(jid);
    this.resolvedNone.delete(jid);
    const ended = [...this.followed.values()].filter((f) => services.includes(f.service));
    // Every node of theirs is no longer followed before the first unsubscribe is waited for: a
    // notification (or a drain's history page) of another of their nodes meanwhile would be
    // written without its partner — into the content database instead of the partner's.
    for (const f of ended) {
      this.ended(f);
      this.followed.delete(key(f.service, f.node));
    }
    for (const f of ended) if ((await this.unfollow(f.service, f.node)) === 'undecided') this.leaving.set(key(f.service, f.node), { service: f.service, node: f.node });
    this.o.log.info('partner removed', { jid, unsubscribed: ended.map((f) => `${f.service} ${f.node}`), ...(this.leaving.size > 0 ? { unsubscribeUnanswered: [...this.leaving.values()].map((l) => `${l.service} ${l.node}`) } : {}) });
    if (!this.leavingNow) this.scheduleLeaving(); // else the run under way arms the next
    if (ended.length > 0 && this.partners.size > 0) this.discoverSoon(); // a service another partner shares is followed again
  }

  /** Call once the component is online. */
  start(): void {
    this.started = true;
    this.owners.load();
    this.o.settings.on('partner', (jid?: unknown) => this.discoverSoon(typeof jid === 'string' && this.partners.has(jid) ? jid : undefined));
    this.discoverSoon();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.leaveTimer);
    this.delivery.backlogChanged(); // drains waiting for the sink end now
    await this.running;
    await this.delivery.idle();
    await Promise.all([...this.followed.values()].map((f) => f.live.saving));
  }

  /**
   * Discovers one partner (or, without one, every partner) now, or right after the run under
   * way. Every partner is discovered again after the interval; one whose discovery failed (an
   * error such as `remote-server-timeout`, or no Hermod service found yet) after 2 s, then 4 s,
   * … up to the interval.
   */
  discoverSoon(partner?: string): void {
    if (this.stopped || !this.started) return;
    if (partner === undefined) this.all = true;
    else {
      this.due.add(partner);
      this.discovered.delete(partner); // its settings may name other nodes now: not followed yet
    }
    this.run();
  }

  /**
   * Resolves once the discoveries asked for so far, and the sweep of stale subscriptions after a
   * full round, have run (their requests answered): for status and tests. Never rejects.
   */
  settled(): Promise<void> {
    return (this.running ?? Promise.resolve()).catch(() => undefined);
  }

  /** Runs the discoveries asked for, then (after a full round) ends the subscriptions nobody follows; one run at a time. */
  private run(): void {
    if (this.running) return;
    let full = false;
    this.running = (async () => {
      while (!this.stopped && (this.all || this.due.size > 0 || this.sweepDue)) {
        if (!this.all && this.due.size === 0) {
          this.sweepDue = false;
          await this.endStaleSubscriptions();
          continue;
        }
        const round = this.all;
        full ||= round;
        const batch = this.all ? [...this.partners] : [...this.due].filter((p) => this.partners.has(p));
        this.all = false;
        this.due.clear();
        for (const p of batch) await this.discoverWithRetry(p);
        if (round && !this.stopped) this.sweepDue = true;
      }
    })().finally(() => {
      this.running = undefined;
      if (this.stopped) return;
      if (full) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.discoverSoon(), this.o.intervalMs);
      }
      this.scheduleRetry();
    });
  }

  /** Arms one timer for the earliest failed partner due again; each is retried when its own delay is up. */
  private scheduleRetry(): void {
    clearTimeout(this.retryTimer);
    for (const p of this.failing.keys()) if (!this.partners.has(p)) this.failing.delete(p);
    if (this.failing.size === 0) return;
    const next = Math.min(...[...this.failing.values()].map((f) => f.at));
    this.retryTimer = setTimeout(() => {
      for (const [p, f] of this.failing) if (f.at <= Date.now()) this.discoverSoon(p);
      if (!this.running) this.scheduleRetry();
    }, Math.max(0, next - Date.now()));
  }

  /** One partner's discovery; a failure schedules a retry with backoff. */
  private async discoverWithRetry(partner: string): Promise<void> {
    let failure: string | undefined;
    try {
      failure = await this.discover(partner);
    } catch (err) {
      failure = String(err);
    }
    if (failure === undefined) {
      // Not when asked again meanwhile (its settings changed during this discovery).
      if (!this.discoveredIncomplete.has(partner) && this.partners.has(partner) && !this.due.has(partner)) this.discovered.add(partner);
      if (this.failing.delete(partner)) this.o.log.info('partner discovered after a failed attempt', { partner });
      return;
    }
    const last = this.failing.get(partner)?.delayMs;
    const retryMs = Math.min(this.o.intervalMs, last === undefined ? DISCOVERY_RETRY_MS : last * 2);
    this.failing.set(partner, { delayMs: retryMs, at: Date.now() + retryMs });
    this.o.log.warn('partner discovery failed', { partner, reason: failure, retryInSeconds: retryMs / 1000 });
  }

  /** Whether a JID is a Hermod pub/sub service: 'unsure' when disco#info got no answer that says (a timeout, an unavailable service: IqError.undecided). */
  private async isHermod(jid: string): Promise<boolean | 'unsure'> {
    try {
      const { identities, features } = await this.client.info(jid);
      if (features.includes(NS.MAM)) this.withHistory.add(jid);
      return identities.some((i) => i.category === 'pubsub' && i.type === 'service') && features.includes(HERMOD_FEATURE);
    } catch (err) {
      return err instanceof IqError && err.undecided ? 'unsure' : false;
    }
  }

  /**
   * The partner's Hermod services: the JID itself, or services on its domain (`found`); `unsure`:
   * JIDs that may be (their disco#info got no answer that says).
   */
  private async serviceSearch(partner: string): Promise<{ found: string[]; unsure: string[] }> {
    const unsure: string[] = [];
    const itself = await this.isHermod(partner);
    if (itself === true) return { found: [partner], unsure };
    if (itself === 'unsure') unsure.push(partner);
    const domain = parseJid(partner)?.domain as string;
    const candidates = (await this.client.items(domain)).entries.filter((i) => i.node === undefined).map((i) => i.jid);
    const found: string[] = [];
    for (const jid of candidates) {
      if (jid === this.o.self) continue;
      const answer = await this.isHermod(jid);
      if (answer === true) found.push(jid);
      else if (answer === 'unsure') unsure.push(jid);
    }
    return { found, unsure };
  }

  /** Whether the partner's settings (and a paused stylesheet) let us follow that node now. */
  private async wants(partner: string, node: string): Promise<boolean> {
    const follow = this.o.settings.partner(partner).follow;
    const listed = follow === 'all' ? this.o.offers(node) : follow !== 'none' && follow.includes(node);
    return listed && (!this.o.mayFollow || (await this.o.mayFollow(partner, node)));
  }

  /** Discovers and follows one partner's nodes; answers why it failed (undefined: it did not). */
  private async discover(partner: string): Promise<string | undefined> {
    if (this.o.settings.partner(partner).follow === 'none') {
      // Turned to "none" while running: what is followed of its services ends now.
      const services = new Set([...this.partnerOf].filter(([, p]) => p === partner).map(([service]) => service));
      // Its services, also when none was followed in this run: what an earlier run subscribed to
      // there is ended by the sweep (a service another partner shares stays that partner's).
      let resolved: string[] = [];
      if (!this.resolvedNone.has(partner)) {
        try {
          const { found, unsure } = await this.serviceSearch(partner);
          resolved = found;
          // Found (or none there): not asked again in this run; a JID whose disco#info got no
          // answer that says (IqError.undecided) may be its service: asked again next round.
          if (unsure.length === 0) this.resolvedNone.add(partner);
          else this.o.log.debug('a partner not followed may have services that did not answer; asked again next round', { partner, unsure });
        } catch (err) {
          this.o.log.debug('the services of a partner not followed could not be listed', { partner, reason: String(err) });
        }
      }
      for (const service of resolved) if (!this.partnerOf.has(service)) this.partnerOf.set(service, partner);
      this.discoveredIncomplete.delete(partner); // follows nothing: nothing of it to wait for
      for (const service of new Set([...services, ...resolved])) this.noteWanted(service, partner, []);
      let ended = 0;
      for (const f of [...this.followed.values()]) if (services.has(f.service)) (await this.unfollow(f.service, f.node), ended++);
      // A service another partner shares (both resolve to it) is followed again for that one.
      if (ended > 0 && this.partners.size > 1) this.discoverSoon();
      return undefined;
    }
    const { found: services, unsure } = await this.serviceSearch(partner);
    for (const service of services) this.partnerOf.set(service, partner);
    // A recorded service that may still be there (no answer) is kept, and its nodes followed in an
    // earlier run go on counting for retractions: this discovery is not complete.
    await this.owners.found(partner, services, unsure);
    if (unsure.some((service) => this.owners.ownerOf(service) === partner)) this.discoveredIncomplete.add(partner);
    else this.discoveredIncomplete.delete(partner);
    if (services.length === 0) return 'no Hermod service found for the partner (not connected yet?)';
    let failure: string | undefined;
    for (const service of services) {
      const wanted: string[] = [];
      for (const node of await this.client.nodes(service)) if (await this.wants(partner, node)) wanted.push(node);
      this.noteWanted(service, partner, wanted);
      await this.forgetLostSubscriptions(service);
      // Several nodes at once (FOLLOWS_AT_ONCE): one node's long catch-up (a first sync) must not
      // hold back the subscriptions to the others, whose notifications would be missed meanwhile.
      const toFollow = wanted.filter((node) => !this.followed.has(key(service, node)));
      const follower = async (): Promise<void> => {
        for (let node = toFollow.shift(); node !== undefined && !this.stopped; node = toFollow.shift()) failure = (await this.follow(service, node)) ?? failure;
      };
      await Promise.all(Array.from({ length: Math.min(FOLLOWS_AT_ONCE, toFollow.length) }, follower));
      for (const f of [...this.followed.values()]) {
        if (f.service === service && !wanted.includes(f.node)) await this.unfollow(f.service, f.node);
        // One copy again as the node's handling is now (a stylesheet added or removed since the
        // follow), packed as the setting says where configuring the subscription did not take.
        else if (f.service === service) await this.setup.reconcile(f, this.o.oneCopy?.(partner, f.node) === true, () => this.followed.get(key(f.service, f.node)) === f);
      }
    }
    return failure;
  }

  /**
   * Our subscriptions that `service` no longer has — ended there without a word to us: after
   * notifications bounced while this site was unreachable (XEP-0060 §4.4), by an owner, or lost
   * with the service's data — are no longer followed here, so that the discovery under way
   * follows those nodes again and catches up from their saved positions (nothing published
   * meanwhile is missed). One request (XEP-0060 §5.6) per service and discovery, and only for
   * follows whose subscribe was answered before it was asked and whose catch-up has ended. A
   * service that cannot list them leaves everything as it is (logged at debug). Never rejects.
   */
  private async forgetLostSubscriptions(service: string): Promise<void> {
    const asked = Date.now();
    const settled = [...this.followed.values()].filter((f) => f.service === service && f.subscribedAt !== undefined && f.subscribedAt < asked && !f.live.catchingUp);
    if (settled.length === 0) return;
    let nodes: string[];
    try {
      nodes = await this.client.subscribedNodes(service);
    } catch (err) {
      this.o.log.debug('our subscriptions could not be listed; not checked', { service, reason: String(err) });
      return;
    }
    const held = new Set(nodes);
    for (const f of settled) {
      if (held.has(f.node) || this.followed.get(key(service, f.node)) !== f || f.live.catchingUp) continue;
      this.o.log.warn('our subscription to a partner node is gone at its service; following it again', { service, node: f.node });
      this.forget(f);
      // The other replication on this JID shared it: its follow ends too (before ours subscribes anew).
      this.claims.lost(this, service, f.node);
    }
  }

  /**
   * Ends follow `f` here without an unsubscribe, to be followed again by a discovery (its
   * subscription gone at the service, its subscribe or catch-up failed, a drain gave up): what
   * settles late of it no longer moves the node's position, a one-copy follow's late payloads are
   * still written for a while (ended), a drain of it sees it gone. Nothing when `f` is not the
   * node's follow any more.
   */
  private forget(f: Followed): void {
    const k = key(f.service, f.node);
    if (this.followed.get(k) !== f) return;
    this.ended(f);
    this.followed.delete(k);
    f.live.held = true; // what settles late must not move the position past the catch-up's start
    this.delivery.backlogChanged(); // a drain of it sees it gone
  }

  /** ClaimHolder: another replication on this JID found our shared subscription to `node` gone at the service. */
  lost(service: string, node: string): void {
    const f = this.followed.get(key(service, node));
    if (!f) return;
    this.o.log.warn('our subscription to a partner node is gone at its service (found by the other replication); following it again', { service, node });
    this.forget(f);
    const partner = this.partnerOf.get(service);
    if (partner !== undefined) this.discoverSoon(partner);
  }

  /**
   * Subscribes to a partner's node and catches up on it. Answers why it failed when trying again
   * may help (no answer, catch-up interrupted); a refusal (e.g. `closed-node`) is logged only.
   */
  private async follow(service: string, node: string): Promise<string | undefined> {
    const k = key(service, node);
    const f: Followed = { service, node, since: this.oneCopy.now(), live: { queue: [], catchingUp: true, liveItems: new Map(), liveSids: new Set(), taken: new Set(), supersedes: new Set(), arrivals: 0, held: false, inFlight: 0 } };
    this.followed.set(k, f); // notifications may arrive before the result
    this.swept.delete(k);
    let digests: Promise<void> | undefined;
    let start: CatchUpStart;
    try {
      start = await this.delivery.catchUpStart(service, node);
      f.live.replayable = start.replayable;
      // What supersedes history entries matters to a history replay only: a catch-up from
      // current items (a first follow) need not keep every live item id twice.
      if (start.position === undefined || !this.o.positions || !this.withHistory.has(service)) {
        f.live.taken = undefined;
        f.live.supersedes = undefined;
      }
      await this.claims.settled(service, node); // an unsubscribe from it under way is answered first
      const subscription = await this.client.subscribe(service, node);
      this.o.log.info('subscribed to partner node', { service, node });
      f.subscribedAt = Date.now();
      const subid = subscription?.attrs.subid as string | undefined;
      if (subid !== undefined) f.subid = subid;
      digests = f.setUp = this.setup.setUp(f);
    } catch (err) {
      this.forget(f);
      f.live.catchingUp = false;
      this.delivery.backlogChanged(); // a drain started meanwhile sees the node gone
      // A timeout or a "not now" (IqError.undecided) is no refusal: the discovery is tried again soon.
      const refused = err instanceof IqError && !err.undecided;
      if (refused) this.o.log.info('partner node refused the subscription', { service, node, reason: String(err) });
      else this.o.log.warn('subscribing to a partner node failed; trying again', { service, node, reason: String(err) });
      return refused ? undefined : `subscribing to ${node}: ${String(err)}`;
    }
    let failure: string | undefined;
    try {
      // Delivery on before the catch-up reads the history: a drain cut short may have left it paused.
      await f.setUp;
      await this.delivery.catchUp(service, node, f, start);
    } catch (err) {
      // Followed again (and caught up from where it stopped) by the retried discovery. Live
      // notifications still being applied must not move the position past what was not read.
      this.forget(f);
      failure = `catching up on ${node}: ${String(err)}`;
    }
    f.live.catchingUp = false;
    f.live.liveItems = undefined;
    f.live.liveSids = undefined;
    f.live.taken = undefined;
    f.live.supersedes = undefined;
    // Saved before anything else waits: a drain (leaveToHistory) starts from the saved position.
    if (failure === undefined && f.live.afterCatchUp !== undefined && !f.live.held) this.delivery.savePosition(f, f.live.afterCatchUp);
    if (failure === undefined && f.live.drainAfterCatchUp && this.followed.get(k) === f) {
      f.live.drainAfterCatchUp = false;
      if (!f.live.deferred) this.delivery.startDrain(f); // one drain at a time: one under way reads it too
    }
    this.delivery.backlogChanged(); // a drain waits for the catch-up
    await digests?.catch(() => undefined); // its failure is the catch-up's (awaited above)
    return failure;
  }

  /**
   * A partner's service told us of a node we may read (§8.9.4 affiliation or §8.8 subscription
   * notification): follow it now if the settings want it. A service not discovered yet (its
   * partner's discovery failed or has not run) starts that partner's discovery instead.
   * True when this replication follows (or is about to follow) the node.
   */
  private async announced(service: string, node: string, how: string): Promise<boolean> {
    if (!this.started || this.stopped) return false;
    const partner = this.partnerOf.get(service);
    if (!partner) {
      const domain = parseJid(service)?.domain ?? service;
      for (const p of this.partners) {
        const pd = parseJid(p)?.domain ?? p;
        if (p === service || domain === pd || domain.endsWith(`.${pd}`)) {
          this.o.log.info('node announced by a service not discovered yet; discovering its partner', { service, node, partner: p, how });
          this.discoverSoon(p);
        }
      }
      return false;
    }
    if (this.followed.has(key(service, node))) return true;
    if (!(await this.wants(partner, node))) return false;
    this.o.log.info('partner announced a node; following it', { service, node, how });
    if (this.running) this.discoverSoon(partner); // that discovery lists the node and follows it
    else {
      const failure = await this.follow(service, node);
      if (failure) this.discoverSoon(partner);
    }
    return true;
  }

  /** A follow ends (unfollowed, or ended by the partner): a one-copy one's late payloads are still written for a while (OneCopyFollows.ended). */
  private ended(f: Followed | undefined): void {
    if (f?.oneCopy) this.oneCopy.ended(f.service, f.node);
  }

  /**
   * Pauses (false) or resumes (true) the delivery of a followed node's notifications to us
   * (SubscriptionSetup.setDelivery): a drain pauses it while it reads the history, so that
   * nobody carries notifications we would leave. Resolves to `taken`, `refused` (an error answer,
   * or the subscription shared with the other replication: nothing changed) or `unknown` (no
   * answer: it may have been applied).
   */
  private async setDelivery(f: Followed, deliver: boolean): Promise<'taken' | 'refused' | 'unknown'> {
    // The subscription is shared with the other replication on this JID, which follows the node
    // too: pausing it would pause that one's notifications as well (its position would then pass
    // the gap). Not paused: what arrives meanwhile is left to the history as with a service that
    // refuses the option.
    if (!deliver && this.claims.byOthers(this, f.service, f.node)) return 'refused';
    return this.setup.setDelivery(f, deliver);
  }

  /** ClaimHolder: whether this replication follows `node` of `service` now. */
  follows(service: string, node: string): boolean {
    return this.followed.has(key(service, node));
  }

  /** Whether the last discovery of `service` (for any of its partners) wanted `node`. */
  private wanted(service: string, node: string): boolean {
    for (const nodes of this.wantedBy.get(service)?.values() ?? []) if (nodes.has(node)) return true;
    return false;
  }

  private noteWanted(service: string, partner: string, nodes: readonly string[]): void {
    let byPartner = this.wantedBy.get(service);
    if (!byPartner) this.wantedBy.set(service, (byPartner = new Map()));
    byPartner.set(partner, new Set(nodes));
  }

  /**
   * Ends the subscriptions of this replication that it neither follows nor wants, and that no
   * other replication on this JID follows (SubscriptionClaims): left by an earlier run whose
   * settings wanted them (`follow` edited while stopped, a partner turned to "none", a stylesheet
   * that no longer compiles). Otherwise the service goes on sending their notifications, which
   * are dropped — and, with one copy on, a document in such a node and a followed one could come
   * through the followed one without payload, to be fetched each time. Which subscriptions are
   * ours: on a service that keeps history, the nodes with a saved history position (one
   * unsubscribe each, no listing that grows with the number of nodes); elsewhere those XEP-0060
   * §5.6 lists, of this replication's kind (`offers`). Services of a partner whose last discovery
   * failed are left for the next round. Never rejects (logged at debug).
   */
  private async endStaleSubscriptions(): Promise<void> {
    const services = new Set([...this.partnerOf].filter(([, partner]) => this.partners.has(partner) && !this.failing.has(partner)).map(([service]) => service));
    const positions = this.o.positions?.nodes ? this.o.positions : undefined;
    for (const service of services) {
      if (this.stopped) return;
      let nodes: string[];
      try {
        nodes = positions?.nodes && this.withHistory.has(service) ? await positions.nodes(service) : (await this.client.subscribedNodes(service)).filter((node) => this.o.offers(node));
      } catch (err) {
        this.o.log.debug('our subscriptions could not be listed', { service, reason: String(err) });
        continue;
      }
      for (const node of nodes) {
        const k = key(service, node);
        // Asked right before the unsubscribe is sent: a follow starting now is in `followed` before its subscribe.
        if (this.stopped || this.swept.has(k) || this.followed.has(k) || this.wanted(service, node) || this.claims.byOthers(this, service, node)) continue;
        this.swept.add(k);
        await this.claims.unsubscribing(service, node, () => this.client.unsubscribe(service, node)).then(
          () => this.o.log.info('unsubscribed from a partner node no longer followed', { service, node }),
          (err: unknown) => {
            if (!(err instanceof IqError) || err.undecided) {
              this.swept.delete(k); // no answer: the next round asks again
              this.o.log.debug('ending a subscription to a partner node no longer followed failed; asked again next round', { service, node, reason: String(err) });
            } else this.o.log.debug('no subscription to end at a partner node no longer followed', { service, node, reason: String(err) }); // ended since an earlier run
          },
        );
      }
    }
  }

  /** Ends the follow of a node and unsubscribes; resolves to 'undecided' when the unsubscribe got no answer that decides (IqError.undecided). */
  private async unfollow(service: string, node: string): Promise<'undecided' | undefined> {
    this.ended(this.followed.get(key(service, node)));
    this.followed.delete(key(service, node));
    // Ajatus and Midgard share the JID, and so one subscription to a node both follow: the other keeps it.
    if (this.claims.byOthers(this, service, node)) return undefined;
    try {
      await this.claims.unsubscribing(service, node, () => this.client.unsubscribe(service, node));
    } catch (err) {
      this.o.log.debug('unsubscribe failed', { service, node, reason: String(err) });
      if (!(err instanceof IqError) || err.undecided) return 'undecided';
    }
    return undefined;
  }

  /** Arms leaveAgain after the next wait (DISCOVERY_RETRY_MS, doubled up to intervalMs) while subscriptions of removed partners are left to end. */
  private scheduleLeaving(): void {
    clearTimeout(this.leaveTimer);
    if (this.leaving.size === 0 || this.stopped) {
      this.leaveDelayMs = 0;
      return;
    }
    this.leaveDelayMs = Math.min(this.o.intervalMs, this.leaveDelayMs === 0 ? DISCOVERY_RETRY_MS : this.leaveDelayMs * 2);
    this.leaveTimer = setTimeout(() => void this.leaveAgain(), this.leaveDelayMs);
  }

  /**
   * Asks again to end each subscription of `leaving`: one followed or wanted again since (the
   * partner added back, another partner sharing the service) is kept; an answer that decides
   * (ended, or nothing there to end) drops it; no answer keeps it for the next try.
   */
  private async leaveAgain(): Promise<void> {
    if (this.leavingNow) return;
    this.leavingNow = true;
    try {
      await this.leaveEach();
    } finally {
      this.leavingNow = false;
    }
    this.scheduleLeaving();
  }

  private async leaveEach(): Promise<void> {
    for (const [k, { service, node }] of [...this.leaving]) {
      if (this.stopped) return;
      if (this.followed.has(k) || this.wanted(service, node) || this.claims.byOthers(this, service, node)) {
        this.leaving.delete(k);
        continue;
      }
      try {
        await this.claims.unsubscribing(service, node, () => this.client.unsubscribe(service, node));
        this.leaving.delete(k);
        this.o.log.info('unsubscribed from a node of a removed partner', { service, node });
      } catch (err) {
        if (err instanceof IqError && !err.undecided) this.leaving.delete(k); // nothing there to end
        else this.o.log.debug('ending a subscription of a removed partner got no answer; asked again later', { service, node, reason: String(err) });
      }
    }
  }

  /** Handles a pub/sub event message (or a history result); returns false if it was not ours. */
  async handleEvent(message: Element): Promise<boolean> {
    if (message.getChild('result', NS.MAM)) return this.client.handleResult(message);
    const from = normalizeJid((message.attrs.from as string | undefined) ?? '');
    const affiliation = message.getChild('pubsub', NS.PUBSUB)?.getChild('affiliations');
    if (affiliation && from) {
      // §8.9.4: our affiliation with one of the service's nodes changed.
      const ours = affiliation.getChildren('affiliation').find((a) => normalizeJid(String(a.attrs.jid ?? '')) === this.o.self);
      const node = affiliation.attrs.node as string | undefined;
      return !!node && !!ours && READERS.has(ours.attrs.affiliation as string) && this.announced(from, node, `affiliation ${String(ours.attrs.affiliation)}`);
    }
    const event = message.getChild('event', NS.PUBSUB_EVENT);
    if (!event) return false;
    // Payloads packed at our asking ({urn:hermod:pubsub:0}packed) back in XEP-0060 form before
    // anything reads them (in place: the other replication on this JID gets the stanza as is). One
    // that cannot be read leaves its item without payload, handled as such (fetched by id).
    for (const { id, reason } of unpackPayloads(message).failed) this.o.log.warn('a packed payload could not be read; the item is handled as one without payload', { from, item: id, reason });
    const items = event.getChild('items');
    const sub = event.getChild('subscription');
    const node = (items ?? event.getChild('delete') ?? event.getChild('purge') ?? sub)?.attrs.node as string | undefined;
    const f = from && node ? this.followed.get(key(from, node)) : undefined;
    if (from && node && !f && items && this.oneCopy.endedLately(from, node)) return this.oneCopy.afterEnd(from, node, items);
    if (!from || !node || !f) {
      // §8.8: an owner subscribed us to a node we do not follow yet.
      if (from && node && sub?.attrs.subscription === 'subscribed' && normalizeJid(String(sub.attrs.jid ?? '')) === this.o.self) return this.announced(from, node, 'subscription');
      if (from && node) this.o.log.debug('event ignored: not from a followed node', { from, node });
      return false; // another replication of this Hermod may follow it
    }
    // One-copy subscription: each item notification gets its ordinal (PayloadsSeen), in arrival order.
    if (items && f.oneCopy && this.o.oneCopy?.(this.partnerOf.get(from), node)) this.oneCopy.arrived(from, node, f.since, items);
    // Left to the history (flow control): an event with items or a purge, so nothing below applies.
    if (await this.delivery.deliver(f, message, event)) return true;
    if (event.getChild('delete') || (sub && sub.attrs.subscription === 'none')) {
      this.ended(f);
      this.followed.delete(key(from, node));
      this.o.log.info('partner ended our subscription', { service: from, node });
    }
    return true;
  }
}
