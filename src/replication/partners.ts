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
// Beside it: catch-up-rules.ts (what a catch-up takes of a page while notifications arrive),
// one-copy-follows.ts (notifications without payload of one-copy subscriptions),
// subscription-setup.ts (our subscriptions' options: digests, one copy, packed, delivery).

import type { Element } from 'ltx';
import type { IqCaller } from '../component/iq-caller.ts';
import { IqError } from '../xmpp/iq-error.ts';
import type { Logger } from '../log.ts';
import { normalizeJid, parseJid } from '../xmpp/jid.ts';
import { NS } from '../xmpp/ns.ts';
import { PubsubClient, type HistoryPage } from '../xmpp/pubsub-client.ts';
import { unpackPayloads } from '../xmpp/packed.ts';
import { ServiceOwners, type ServiceOwnerRecords } from './service-owners.ts';
import { pageOfItems, stableAnchor, withoutSuperseded } from './catch-up-rules.ts';
import { OneCopyFollows } from './one-copy-follows.ts';
import { PAYLOAD_WAIT_MS } from './payloads-seen.ts';
import { StoppedError } from './stopped-error.ts';
import { RefusedWrite, writeLeaves, type PartnerSink } from '../sinks/sink.ts';
import type { PartnerSettings } from './settings.ts';
import { SubscriptionClaims, type ClaimHolder } from './subscription-claims.ts';
import { SubscriptionSetup, type ConfiguredSubscription } from './subscription-setup.ts';

/** Disco feature by which Hermod services recognise each other. */
export const HERMOD_FEATURE = 'urn:hermod:replication:0';

/** Durable per-node position in a partner's history (XEP-0313 archive id). */
export interface HistoryPositions {
  get(service: string, node: string): Promise<string | undefined>;
  set(service: string, node: string, id: string): Promise<void>;
  /** The nodes of `service` with a position: those followed now or in an earlier run. */
  nodes?(service: string): Promise<string[]>;
}

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
   * `leaveToHistory`). Default LIVE_BACKLOG_ITEMS.
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

/** Live notifications of one followed node, in arrival order, until they are applied. */
interface LiveTrack {
  /** Archive ids (XEP-0359 stanza-id) of notifications not yet applied or not yet counted. */
  queue: Array<{ id: string; settled?: boolean; ok?: boolean }>;
  /** Catch-up under way: it moves the position itself; what live notifications reach meanwhile is saved after it. */
  catchingUp: boolean;
  /**
   * While catching up: each item id that a live event published or retracted since we
   * subscribed, with the ordinal (`arrivals`) of the first such event (current-items pages:
   * pageOfItems); and the archive ids (stanza-id) of the live events that have one. A catch-up
   * stops where it meets what certainly came after the subscription and skips what a live
   * event superseded.
   */
  liveItems?: Map<string, number>;
  liveSids?: Set<string>;
  /**
   * While a history replay catches up (replayHistory): the archive ids of the entries it has
   * taken, and the ids of the items touched by live events whose archive id it had not taken
   * when they arrived — events newer than every entry it takes before its stop, so those items'
   * entries are superseded. (An event whose entry was taken already lagged behind the history:
   * it supersedes nothing taken after it.)
   */
  taken?: Set<string>;
  supersedes?: Set<string>;
  /** Live events received while catching up (the next one's ordinal in `liveItems`). */
  arrivals: number;
  afterCatchUp?: string;
  /** Something received could not be applied: the position stays before it until the next catch-up. */
  held: boolean;
  /** Live events of this node being applied (handed to the sink, not yet settled). */
  inFlight: number;
  /** Notifications are left to the node's history (the sink fell behind): a drain replays them. */
  deferred?: boolean;
  /** A notification with archive id failed during a catch-up that could not leave it to the history: a drain starts once the catch-up ends (applyAgain). */
  drainAfterCatchUp?: boolean;
  /** During a catch-up: it has a restart point in the history, so notifications may be left (CatchUpStart.replayable). */
  replayable?: boolean;
  /** Position waiting to be written, and the write under way (writes are coalesced). */
  next?: string;
  saving?: Promise<void>;
}

/** A node we follow: our subscription (its options: subscription-setup.ts) and its live notifications. */
interface Followed extends ConfiguredSubscription {
  live: LiveTrack;
  /** PayloadsSeen.now() when this follow began: what was notified before is not known. */
  since: number;
  /**
   * Items being read again (rereadItems): 0 while pending, 1 once a live event touched one since
   * (it is newer), 2 once such a newer event failed too (to be read again after the read under way).
   */
  rereads?: Map<string, number>;
}

/** Where a node's catch-up starts (see PartnerManager.catchUpStart). */
interface CatchUpStart {
  /** The saved history position: the catch-up replays the history after it. */
  position?: string;
  /** First follow: the newest history entry before we subscribed (undefined: the history was empty). */
  end?: string;
  /** Whether everything published after our subscription can be read back from the history. */
  replayable: boolean;
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
/** Attempts of a drain (see PartnerManager.drain) before the node is followed afresh. */
const DRAIN_ATTEMPTS = 10;
/** Attempts of reading failed items again (rereadItems): at the discovery interval once backed off, days (300 s: 3.5 days). */
const REREAD_ATTEMPTS = 1000;
/** Entries per history (XEP-0313) page read by a catch-up or a drain. */
const HISTORY_PAGE = 100;

/** Items per page of a catch-up from a node's current items. */
const ITEM_PAGE = 100;
/** Pages one catch-up from current items reads at most (10 million items), a bound on the loop. */
const CATCH_UP_PAGES = 100_000;
/** Times a catch-up asks a page again because its anchor was republished or retracted meanwhile. */
const ANCHOR_MOVES = 50;
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
  /** Live items handed to the sink and not yet written, over every followed node (see leaveToHistory). */
  private backlog = 0;
  private readonly backlogBound: number;
  /** Drains waiting for the backlog to fall (woken at every change, and by stop()). */
  private backlogWaiters: Array<() => void> = [];
  /** Drains and re-reads under way (see drain, rereadItems), awaited by stop(). */
  private readonly drains = new Set<Promise<void>>();
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
    this.backlogBound = o.liveBacklogItems ?? LIVE_BACKLOG_ITEMS;
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
      pause: (ms) => this.pause(ms),
      track: (task) => this.track(task),
      reread: (service, node, ids) => {
        const f = this.followed.get(key(service, node));
        if (f) this.rereadItems(f, ids);
      },
    });
  }

  /** A task stop() waits for (it should not reject: a rejection is logged). */
  private track(task: Promise<void>): void {
    const tracked = task.catch((err: unknown) => this.o.log.error('partner replication task failed', { reason: String(err) })).finally(() => this.drains.delete(tracked));
    this.drains.add(tracked);
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
    for (const f of ended) await this.unfollow(f.service, f.node);
    this.o.log.info('partner removed', { jid, unsubscribed: ended.map((f) => `${f.service} ${f.node}`) });
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
    this.backlogChanged(); // drains waiting for the sink end now
    await this.running;
    await Promise.all(this.drains);
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

  /** The partner's Hermod services (serviceSearch's `found`). */
  private async services(partner: string): Promise<string[]> {
    return (await this.serviceSearch(partner)).found;
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
          resolved = await this.services(partner);
          this.resolvedNone.add(partner); // found (or none there): not asked again in this run
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
      start = await this.catchUpStart(service, node);
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
      const subid = subscription?.attrs.subid as string | undefined;
      if (subid !== undefined) f.subid = subid;
      digests = f.setUp = this.setup.setUp(f);
    } catch (err) {
      if (this.followed.get(k) === f) this.followed.delete(k);
      f.live.held = true; // what settles late must not move the position
      f.live.catchingUp = false;
      this.backlogChanged(); // a drain started meanwhile sees the node gone
      const refused = err instanceof IqError;
      this.o.log[refused ? 'info' : 'warn']('partner node refused the subscription', { service, node, reason: String(err) });
      return refused ? undefined : `subscribing to ${node}: ${String(err)}`;
    }
    let failure: string | undefined;
    try {
      // Delivery on before the catch-up reads the history: a drain cut short may have left it paused.
      await f.setUp;
      await this.catchUp(service, node, f, start);
    } catch (err) {
      // Followed again (and caught up from where it stopped) by the retried discovery. Live
      // notifications still being applied must not move the position past what was not read.
      if (this.followed.get(k) === f) {
        this.ended(f);
        this.followed.delete(k);
      }
      f.live.held = true;
      failure = `catching up on ${node}: ${String(err)}`;
    }
    f.live.catchingUp = false;
    f.live.liveItems = undefined;
    f.live.liveSids = undefined;
    f.live.taken = undefined;
    f.live.supersedes = undefined;
    // Saved before anything else waits: a drain (leaveToHistory) starts from the saved position.
    if (failure === undefined && f.live.afterCatchUp !== undefined && !f.live.held) this.savePosition(f, f.live.afterCatchUp);
    if (failure === undefined && f.live.drainAfterCatchUp && this.followed.get(k) === f) {
      f.live.drainAfterCatchUp = false;
      if (!f.live.deferred) this.startDrain(f); // one drain at a time: one under way reads it too
    }
    this.backlogChanged(); // a drain waits for the catch-up
    await digests?.catch(() => undefined); // its failure is the catch-up's (awaited above)
    return failure;
  }

  /**
   * Where a catch-up starts, read before subscribing: the node's saved history position, or, on
   * a first follow of a node with history, the id of the newest history entry (undefined: none
   * yet). Everything published after that point is in the history after it, so notifications
   * left to the history during the catch-up (leaveToHistory) are read back by a drain that
   * starts there (`replayable`). A history that cannot be read: current items only.
   */
  private async catchUpStart(service: string, node: string): Promise<CatchUpStart> {
    const positions = this.o.positions && this.withHistory.has(service) ? this.o.positions : undefined;
    if (!positions) return { replayable: false };
    const position = await positions.get(service, node);
    if (position !== undefined) return { position, replayable: true };
    try {
      const end = await this.client.historyEnd(service, node);
      return { ...(end !== undefined ? { end } : {}), replayable: true };
    } catch (err) {
      this.o.log.warn('partner history not readable; catch-up reads current items only', { service, node, reason: String(err) });
      return { replayable: false };
    }
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

  private async unfollow(service: string, node: string): Promise<void> {
    this.ended(this.followed.get(key(service, node)));
    this.followed.delete(key(service, node));
    // Ajatus and Midgard share the JID, and so one subscription to a node both follow: the other keeps it.
    if (this.claims.byOthers(this, service, node)) return;
    try {
      await this.claims.unsubscribing(service, node, () => this.client.unsubscribe(service, node));
    } catch (err) {
      this.o.log.debug('unsubscribe failed', { service, node, reason: String(err) });
    }
  }

  /**
   * What notifications missed. With a remembered position and a service that keeps history
   * (XEP-0313 on nodes), replays the node's history since then — publications and retractions,
   * in order, so deletions missed while offline arrive too. Otherwise reads the node's current
   * items (RSM pages), after noting the history's end as the position for next time.
   */
  private async catchUp(service: string, node: string, f: Followed, start: CatchUpStart): Promise<void> {
    /** Every item applied, none skipped, no stop: notifications were left that no drain will read. */
    let readAll = false;
    let unapplied = false;
    const positions = this.o.positions && this.withHistory.has(service) ? this.o.positions : undefined;
    const { position } = start;
    this.o.log.debug('catching up', { service, node, history: positions !== undefined, position });
    if (positions && position !== undefined) {
      try {
        const { replayed, complete, retry } = await this.replayHistory(service, node, position, positions, f.live);
        if (complete || !retry) {
          // An entry the sink refused for itself (RefusedWrite; a sink without the XSLT stage, which
          // quarantines such leaves instead) holds the position: it is tried again at the next start.
          if (!complete) f.live.held = true;
          this.o.log.info('caught up with partner node from its history', { service, node, entries: replayed });
          return;
        }
        f.live.held = true;
        unapplied = true;
      } catch (err) {
        if (this.stopped) throw err;
        this.o.log.warn('history replay failed; reading current items instead', { service, node, reason: String(err) });
        // No restart point before our subscription any more: no drain starts during this
        // catch-up, and what was already left is read as current items, to the end (a drain
        // reads what is left from here on from the history's end noted now; a retraction left
        // before it is lost, as in any catch-up from current items).
        f.live.replayable = false;
        if (f.live.deferred) readAll = true;
      }
      // Entries the sink could not write (the database down past its retries): the follow fails
      // and is tried again (from the position, which stayed before them) by a discovery.
      if (unapplied) throw new Error('history entries could not be written');
    }
    const end = position === undefined
      ? start.end
      : positions
        ? await this.client.historyEnd(service, node).catch((err: unknown) => {
            this.o.log.warn('partner history not readable; catch-up reads current items only', { service, node, reason: String(err) });
            return undefined;
          })
        : undefined;
    let count = 0;
    let superseded = 0;
    const partner = this.partnerOf.get(service);
    let reachedLive = false;
    const touched = f.live.liveItems; // the live events' touches, filled in as they arrive
    // Pages are asked for after an item (XEP-0059 `after`). An item republished or retracted
    // since we read it is no anchor: the service places "after" at its new place (the end of the
    // node) or finds no such item, and every item between would be skipped. So the anchor is the
    // last item read that no live event had touched when it was chosen (`anchors`, newest last),
    // and a page whose anchor a live event touched after it was asked for is asked for again
    // from an earlier anchor (from the start when none is left: what is read twice is written
    // twice, which the sinks take as a no-op).
    const anchors: string[] = [];
    let after: string | undefined;
    let moves = 0;
    // Live events received before the page under way was asked for (see pageOfItems).
    let askedAt = f.live.arrivals;
    const movedSinceAsked = (id: string): boolean => (touched?.get(id) ?? -1) >= askedAt;
    for (let pages = 0; ; pages++) {
      if (this.stopped) throw new StoppedError();
      if (pages >= CATCH_UP_PAGES) throw new Error(`catch-up read ${CATCH_UP_PAGES} pages of ${node} without reaching its end`);
      let read: Element[] | undefined;
      try {
        read = (await this.client.itemsPage(service, node, { max: ITEM_PAGE, ...(after !== undefined ? { after } : {}) })).entries;
      } catch (err) {
        // item-not-found for an anchor retracted after we asked: asked again below.
        if (!(after !== undefined && err instanceof IqError && err.condition === 'item-not-found' && movedSinceAsked(after))) throw err;
      }
      if (this.stopped) throw new StoppedError();
      if (after !== undefined && movedSinceAsked(after)) {
        if (++moves > ANCHOR_MOVES) throw new Error(`catch-up of ${node}: ${ANCHOR_MOVES} page anchors republished or retracted while being read`);
        after = stableAnchor(anchors, touched);
        askedAt = f.live.arrivals;
        continue;
      }
      const entries = read ?? [];
      const { page, reached, skipped } = pageOfItems(entries, readAll ? undefined : touched, askedAt);
      superseded += skipped;
      for (const item of entries) {
        const id = String(item.attrs.id);
        if (!touched?.has(id)) anchors.push(id);
      }
      if (anchors.length > 2 * ITEM_PAGE) anchors.splice(0, anchors.length - ITEM_PAGE);
      // Leaves the sink refused for themselves (RefusedWrite, each logged by it) are skipped: reading
      // the node again would only be refused again. Anything else fails the follow (tried again).
      const written = await writeLeaves(this.o.sink, page.map((item) => ({ service, node, item, ...(partner !== undefined ? { partner } : {}) }))).catch((err: unknown) => {
        if (!(err instanceof RefusedWrite)) throw err;
        this.o.log.warn('partner items refused by this site were skipped', { service, node, reason: String(err) });
        return [];
      });
      count += written.filter(Boolean).length;
      if (reached) {
        reachedLive = true;
        break;
      }
      if (entries.length === 0) break; // past the last item (a service may page fewer than asked)
      const last = String(entries.at(-1)?.attrs.id);
      after = touched?.has(last) ? stableAnchor(anchors, touched) : last;
      askedAt = f.live.arrivals; // the next page is asked for now
    }
    if (positions && end) await positions.set(service, node, end);
    this.o.log.info('caught up with partner node', { service, node, documents: count, ...(superseded > 0 ? { superseded } : {}), ...(reachedLive ? { reachedLive } : {}) });
  }

  /**
   * Replays a node's history after `position`, moving the position past each entry applied
   * (when `positions` is given); it stops moving at the first entry that could not be applied
   * (`complete` false), so the next catch-up tries that one again. With `live` (a catch-up), it
   * stops at the first entry that also reached us live. The next page is asked for while one is
   * applied (one page ahead: the sink sets the pace). `last`: the id of the last entry read.
   * Ends with a StoppedError on stop() or once `alive` says no (a node no longer followed).
   */
  private async replayHistory(service: string, node: string, position: string | undefined, positions: HistoryPositions | undefined, live?: LiveTrack, alive?: () => boolean): Promise<{ replayed: number; complete: boolean; retry: boolean; last: string | undefined }> {
    let replayed = 0;
    let superseded = 0;
    let applied: string | undefined = position;
    let lastRead: string | undefined = position;
    let failed = false;
    /** Items whose write failed in a way that may pass (not RefusedWrite): trying again may help. */
    const retryable = new Set<string>();
    const ask = (after: string | undefined): Promise<HistoryPage> => {
      const page = this.client.history(service, node, { max: HISTORY_PAGE, ...(after !== undefined ? { after } : {}) });
      page.catch(() => undefined); // a page asked for ahead and not awaited (stopped, failed) must not be an unhandled rejection
      return page;
    };
    let next: Promise<HistoryPage> | undefined = ask(position);
    for (let page = 0; page < 100_000 && next; page++) {
      if (this.stopped || (alive && !alive())) throw new StoppedError();
      const read: HistoryPage = await next;
      const { complete, last } = read;
      // The archive is in publication order and every event since we subscribed reaches us live
      // (with its archive id): from the first one that did, the rest of the history is not read.
      const reached = read.entries.findIndex(({ id }) => live?.liveSids?.has(id) === true);
      const entries = reached === -1 ? read.entries : read.entries.slice(0, reached);
      next = reached === -1 && !complete && last && entries.length > 0 ? ask(last) : undefined;
      const before = applied;
      // A page's entries are applied together (the sink batches them; each document in order).
      // Items a newer live event touched (LiveTrack.supersedes) are not applied from them; the
      // entries are taken first, so a notification of one of them arriving from now on (it lagged
      // behind the history) supersedes nothing.
      const touched = live?.supersedes;
      const events = entries.map(({ message }) => {
        const { event, dropped } = withoutSuperseded(message.getChild('event', NS.PUBSUB_EVENT), touched);
        superseded += dropped;
        return event;
      });
      for (const { id } of entries) live?.taken?.add(id);
      const results = await Promise.all(events.map((event) => this.applyEvent(service, node, event, retryable)));
      entries.forEach(({ id }, i) => {
        replayed++;
        lastRead = id;
        if (!results[i]) failed = true;
        else if (!failed) applied = id;
      });
      if (positions && applied !== undefined && applied !== before) await positions.set(service, node, applied);
    }
    if (superseded > 0) this.o.log.debug('history entries superseded by live notifications were not applied', { service, node, items: superseded });
    return { replayed, complete: !failed, retry: retryable.size > 0, last: lastRead };
  }

  /**
   * Writes the items and applies the retractions of one event of a followed node; false if any
   * failed (their ids added to `failed` where trying again may help: not when a stop cut them
   * short, not when the sink refused the leaf itself, RefusedWrite), and for an event of a
   * partner removed meanwhile. Every write and retraction is handed to the sink at once, in the
   * event's order (the sink batches them and keeps each document's order), before this waits for
   * them; so the events of a history page, started one after the other, are written together too.
   */
  private async applyEvent(from: string, node: string, event: Element | undefined, failed?: Set<string>): Promise<boolean> {
    const items = event?.getChild('items');
    if (!items) return true;
    const partner = this.partnerOf.get(from);
    // Its partner removed meanwhile (a history page read before): written nowhere, rather than
    // into the content database (where a sink writes what has no partner).
    if (partner === undefined && !this.partners.has(from)) {
      this.o.log.debug('event of a removed partner not applied', { from, node });
      return false; // not applied: a history position must not move past it
    }
    const log = (what: string, id: unknown) => (err: unknown) => {
      this.o.log[err instanceof StoppedError ? 'debug' : 'error'](what, { from, node, item: id, reason: String(err) });
      if (!(err instanceof StoppedError) && !(err instanceof RefusedWrite)) failed?.add(String(id));
      return false;
    };
    // In document order: a digest (pubsub#digest) may carry an edit, its retraction and a new
    // edit of the same document in one <items/>.
    const done: Array<Promise<boolean>> = [];
    for (const child of items.children) {
      if (typeof child === 'string') continue;
      if (child.name === 'item') done.push(this.oneCopy.write(from, node, child, partner).then(() => true, log('writing a replicated document failed', child.attrs.id)));
      else if (child.name === 'retract') {
        const followedElsewhere = (other: string): boolean => other !== node && this.followed.has(key(from, other));
        const id = child.attrs.id as string;
        const retract = (): Promise<void> => this.o.sink.retract(from, node, id, followedElsewhere, partner);
        done.push(this.oneCopy.retract(from, node, id, retract).then(() => true, log('deleting a retracted document failed', child.attrs.id)));
      }
    }
    return (await Promise.all(done)).every(Boolean);
  }

  /**
   * A live notification with archive id `id` was applied (or failed): the node's position moves
   * to the newest id before which everything received was applied. Writes are coalesced.
   */
  private settle(f: Followed, entry: LiveTrack['queue'][number], ok: boolean): void {
    const live = f.live;
    entry.settled = true;
    entry.ok = ok;
    let position: string | undefined;
    while (live.queue[0]?.settled) {
      const done = live.queue.shift() as LiveTrack['queue'][number];
      if (!done.ok && !live.held) {
        live.held = true;
        this.o.log.warn('history position held: a notification could not be applied', { service: f.service, node: f.node, id: done.id });
      }
      position = done.id;
    }
    if (position === undefined || live.held) return;
    if (live.catchingUp) live.afterCatchUp = position;
    else this.savePosition(f, position);
  }

  /** Writes a followed node's history position; writes asked for while one is under way are coalesced. */
  private savePosition(f: Followed, position: string): void {
    const positions = this.o.positions;
    const live = f.live;
    if (!positions) return;
    live.next = position;
    live.saving ??= (async () => {
      while (live.next !== undefined) {
        const id = live.next;
        live.next = undefined;
        await positions.set(f.service, f.node, id).catch((err: unknown) => this.o.log.error('saving the history position failed', { service: f.service, node: f.node, reason: String(err) }));
      }
    })().finally(() => (live.saving = undefined));
  }

  /**
   * Flow control for live notifications. A partner that publishes faster than our sink writes (a
   * first sync of a large database) would have us hold its notifications in memory until their
   * turn, without bound: XMPP has no flow control of its own, and pausing our socket would hold
   * back the IQ results that work under way waits for. So once `liveBacklogItems` items wait for
   * the sink, a node whose history we can read (XEP-0313 on nodes, positions kept; during a
   * catch-up, only one that started from a point in that history) leaves its further
   * notifications to that history: they are not applied and
   * its position stays before the first of them; `drain` reads them back at the sink's pace.
   * Nothing is lost (the archive keeps them; a restart replays from the position) and memory
   * stays bounded. True: this one was left.
   */
  private leaveToHistory(f: Followed): boolean {
    const live = f.live;
    if (live.deferred) return true;
    if (this.backlog < this.backlogBound || !this.replayable(f)) return false;
    this.o.log.info('partner notifications arrive faster than they are written: reading the node from its history at our pace', { service: f.service, node: f.node, waitingItems: this.backlog });
    this.startDrain(f);
    return true;
  }

  /** Whether what reaches us of `f` from now on can be read back from its history (positions kept; during a catch-up, one that started from a point in that history). */
  private replayable(f: Followed): boolean {
    return !!this.o.positions && this.withHistory.has(f.service) && (!f.live.catchingUp || f.live.replayable === true);
  }

  /** Leaves `f`'s further notifications to its history and reads them back (drain). */
  private startDrain(f: Followed): void {
    f.live.deferred = true;
    this.track(this.drain(f));
  }

  /**
   * Live notifications of `f` could not be applied (the database down past the sink's retries):
   * they are applied again without waiting for a restart. With an archive id (`sid`) and a
   * history to read back, the node is read from its saved position (held before the failure) as
   * flow control does — delivery paused, tried again until the history is applied (drain).
   * Otherwise (a notification without archive id, such as the §6.1.7 last item sent on
   * subscribing, which lies before the position a first catch-up saves; a service without
   * history) the items named in `ids` are read again as they are now (rereadItems).
   */
  private applyAgain(f: Followed, sid: string | undefined, ids: Iterable<string>): void {
    if (this.stopped || this.followed.get(key(f.service, f.node)) !== f) return;
    if (sid !== undefined && this.replayable(f)) {
      if (f.live.deferred) return; // a drain under way reads it (it starts from the saved position)
      this.o.log.warn('a partner notification could not be written; reading the node again from its history', { service: f.service, node: f.node, id: sid });
      this.startDrain(f);
      return;
    }
    // A catch-up without a restart point in the history (a drain's last stretch, a first follow
    // whose history end was not read): the items now, and once it ends a drain from the saved
    // position, which releases the position this failure holds.
    if (sid !== undefined && this.o.positions && this.withHistory.has(f.service) && f.live.catchingUp && !f.live.deferred) f.live.drainAfterCatchUp = true;
    this.rereadItems(f, ids);
  }

  /**
   * Reads items of `f` again (XEP-0060 §6.5.8 by id) and applies them as they are now — written,
   * or retracted where the node no longer has them — after 2 s, doubling up to the discovery
   * interval, until that succeeds (at most REREAD_ATTEMPTS times; then logged as an error: the item
   * waits for its next edit). A leaf the sink refused for itself (RefusedWrite) is not tried
   * again. An item a live notification touched since
   * the read was asked for is left to it (newer). Ends on stop() and when the node is no longer
   * followed. Never rejects.
   */
  private rereadItems(f: Followed, ids: Iterable<string>): void {
    const { service, node } = f;
    const pending = (f.rereads ??= new Map());
    const asked = [...ids];
    // One being read already: a newer version of it failed meanwhile, so that read (which leaves
    // it to the live event) must read it once more.
    for (const id of asked) if (pending.has(id)) pending.set(id, 2);
    const fresh = asked.filter((id) => !pending.has(id));
    if (fresh.length === 0) return;
    for (const id of fresh) pending.set(id, 0);
    this.o.log.warn('partner items could not be written; reading them again', { service, node, items: fresh.length, first: fresh[0] });
    const gone = (): boolean => this.stopped || this.followed.get(key(service, node)) !== f;
    const task = async (): Promise<void> => {
      // The ids this task reads (an id leaves once done, so that a later task may own it).
      const owned = new Set(fresh);
      let todo = fresh;
      let retryMs = DISCOVERY_RETRY_MS;
      for (let attempt = 1; attempt <= REREAD_ATTEMPTS && todo.length > 0; attempt++) {
        await this.pause(retryMs);
        retryMs = Math.min(retryMs * 2, this.o.intervalMs);
        if (gone()) return;
        try {
          for (const id of todo) pending.set(id, 0); // a live event touching it from now on is newer than what we read
          const found = new Map<string, Element>();
          for (const item of await this.client.itemsById(service, node, todo)) if (item.getChildElements().length > 0) found.set(String(item.attrs.id), item);
          if (gone()) return;
          const partner = this.partnerOf.get(service);
          const followedElsewhere = (other: string): boolean => other !== node && this.followed.has(key(service, other));
          const mine = todo.filter((id) => pending.get(id) === 0);
          const results = await Promise.allSettled(mine.map((id) => {
            const item = found.get(id);
            return item ? this.o.sink.writeItem(service, node, item, partner) : this.o.sink.retract(service, node, id, followedElsewhere, partner);
          }));
          // A leaf the sink refused for itself (RefusedWrite, logged by it) is not tried again.
          const failures = mine.flatMap((id, i) => (results[i]?.status === 'rejected' && !((results[i] as PromiseRejectedResult).reason instanceof RefusedWrite) ? [id] : []));
          // Read again: what failed now (unless a live event has a newer version of it: 1), and
          // what a live event left to this read and then failed to write itself (2).
          todo = [...owned].filter((id) => pending.get(id) === 2 || (pending.get(id) === 0 && failures.includes(id)));
          for (const id of owned) {
            if (todo.includes(id)) continue;
            pending.delete(id);
            owned.delete(id);
          }
          if (todo.length === 0) {
            const refused = mine.filter((_, i) => results[i]?.status === 'rejected' && (results[i] as PromiseRejectedResult).reason instanceof RefusedWrite).length;
            const applied = mine.filter((_, i) => results[i]?.status === 'fulfilled').length;
            this.o.log.info('partner items applied on a later attempt', { service, node, items: applied, ...(refused > 0 ? { refused } : {}), attempts: attempt });
            return;
          }
          const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
          this.o.log.warn('partner items still not written; trying again', { service, node, items: todo.length, retryInSeconds: retryMs / 1000, reason: failure ? String(failure.reason) : 'a newer version failed live meanwhile' });
        } catch (err) {
          if (gone()) return;
          this.o.log.warn('reading partner items again failed; trying again', { service, node, items: todo.length, retryInSeconds: retryMs / 1000, reason: String(err) });
        }
      }
      // Out of attempts; what a live failure handed over in the last one gets attempts of its own.
      const again = todo.filter((id) => pending.get(id) === 2);
      for (const id of todo) pending.delete(id);
      if (gone()) return;
      if (todo.length > again.length) this.o.log.error('partner items not written after repeated attempts: they wait for their next edit', { service, node, items: todo.length - again.length, first: todo.find((id) => !again.includes(id)) });
      if (again.length > 0) this.rereadItems(f, again);
    };
    this.track(task());
  }

  /**
   * Reads back what leaveToHistory left of a node. Asks the service to pause delivery
   * (pubsub#deliver) meanwhile — the history has it all, and nobody need carry what we would
   * leave — then, once the backlog is down to a quarter of its bound and the node's own live
   * work has settled (its position written), reads the history page by page (one page ahead:
   * the sink sets the pace) from the saved position to its end. Then it resumes delivery and
   * catches up as a follow does: notifications are applied as they arrive again, and the
   * history is read on only up to the first of them (everything after it arrives live). A failed
   * attempt is tried again from where it stopped after 2 s, doubling up to the discovery
   * interval. Ends on stop() and when the node is no longer followed. Never rejects.
   */
  private async drain(f: Followed): Promise<void> {
    const { service, node, live } = f;
    const positions = this.o.positions as HistoryPositions;
    const k = key(service, node);
    const gone = (): boolean => this.stopped || this.followed.get(k) !== f;
    const held = (complete: boolean): void => {
      if (complete || live.held) return;
      live.held = true;
      this.o.log.warn('history position held: an entry could not be applied; read again from before it', { service, node });
    };
    let pause = this.setDelivery(f, false);
    let from: string | undefined;
    let first = true;
    let entries = 0;
    let retryMs = DISCOVERY_RETRY_MS;
    let failure: unknown;
    for (let attempt = 1; attempt <= DRAIN_ATTEMPTS; attempt++) {
      // Woken by each live event that settles (the sink's writes end: they succeed, or fail
      // after its bounded retries), by the end of a catch-up and by stop().
      while (!gone() && (this.backlog > this.backlogBound / 4 || live.inFlight > 0 || live.catchingUp)) await new Promise<void>((wake) => this.backlogWaiters.push(wake));
      await live.saving;
      if (gone()) {
        live.held = true; // what settles late must not move the position past what was left
        return;
      }
      try {
        // To the end of the history. From the saved position everything before it was applied,
        // so the replay may move it; after an entry that could not be applied it stays put.
        const start = first ? await positions.get(service, node) : from;
        const pulled = await this.replayHistory(service, node, start, first || !live.held ? positions : undefined, undefined, () => !gone());
        if (first && pulled.complete) live.held = false;
        held(pulled.complete);
        // An entry not applied (the database still down): tried again from the saved position,
        // which the replay moved up to it (or from where the last attempt read on).
        if (!pulled.complete && pulled.retry) throw new Error('a history entry could not be written');
        first = false;
        from = pulled.last ?? start;
        entries += pulled.replayed;
        // Delivery back on (also when the pause got no answer: it may have been applied).
        const paused = await pause;
        if (paused !== 'refused') {
          const resumed = await this.setDelivery(f, true);
          if (resumed !== 'taken' && !(resumed === 'refused' && paused === 'unknown')) throw new Error('the partner service did not resume delivery');
          pause = Promise.resolve('refused');
        }
        if (gone()) {
          live.held = true;
          return;
        }
        // Then up to the first notification that arrives live.
        live.deferred = false;
        live.catchingUp = true;
        live.replayable = false; // this last short catch-up applies what arrives
        live.liveSids = new Set();
        live.liveItems = new Map();
        live.taken = new Set();
        live.supersedes = new Set();
        live.afterCatchUp = undefined;
        try {
          const rest = await this.replayHistory(service, node, from, live.held ? undefined : positions, live, () => !gone());
          held(rest.complete);
          entries += rest.replayed;
          if (!rest.complete && rest.retry) throw new Error('a history entry could not be written');
        } catch (err) {
          // Left again until the next attempt, which starts from the saved position: live
          // notifications applied meanwhile must not move it past what this one did not read.
          live.deferred = true;
          live.held = true;
          first = true;
          pause = this.setDelivery(f, false);
          throw err;
        } finally {
          live.catchingUp = false;
          live.liveSids = undefined;
          live.liveItems = undefined;
          live.taken = undefined;
          live.supersedes = undefined;
        }
        if (live.afterCatchUp !== undefined && !live.held) this.savePosition(f, live.afterCatchUp);
        live.afterCatchUp = undefined;
        this.o.log.info('caught up with partner node from its history; applying its notifications as they arrive again', { service, node, entries, attempts: attempt });
        if (live.drainAfterCatchUp) {
          live.drainAfterCatchUp = false;
          this.startDrain(f);
        }
        return;
      } catch (err) {
        if (gone()) {
          live.held = true;
          return;
        }
        failure = err;
        // The position fell out of the partner's history (trimmed while we were behind): no
        // retry can read it; following the node again falls back to its current items.
        if (err instanceof IqError && err.condition === 'item-not-found') break;
        if (attempt === DRAIN_ATTEMPTS) break;
        this.o.log.warn('reading the history of a partner node (notifications left to it) failed; trying again', { service, node, reason: String(err), retryInSeconds: retryMs / 1000 });
        await this.pause(retryMs);
        retryMs = Math.min(retryMs * 2, this.o.intervalMs);
      }
    }
    // Given up: the node is followed again by a discovery (its catch-up reads the history from
    // the saved position, or the current items), which also turns delivery back on.
    live.held = true;
    live.deferred = false;
    if (this.followed.get(k) === f) this.followed.delete(k);
    this.o.log.warn('reading the history of a partner node (notifications left to it) failed; following the node again', { service, node, reason: String(failure) });
    void pause.then((paused) => (paused !== 'refused' && !this.stopped ? this.setDelivery(f, true) : undefined));
    const partner = this.partnerOf.get(service);
    if (partner !== undefined) this.discoverSoon(partner);
  }


  /** Waits `ms`, or less when stop() is called. */
  private async pause(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let over = false;
    await new Promise<void>((wake) => {
      timer = setTimeout(wake, ms);
      const onChange = (): void => {
        if (over) return;
        if (this.stopped) wake();
        else this.backlogWaiters.push(onChange);
      };
      this.backlogWaiters.push(onChange);
    });
    over = true;
    clearTimeout(timer);
  }

  /** Wakes the drains waiting for the backlog (a live event settled, or stopping). */
  private backlogChanged(): void {
    if (this.backlogWaiters.length === 0) return;
    const waiters = this.backlogWaiters;
    this.backlogWaiters = [];
    for (const wake of waiters) wake();
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
    // The archive id the service gave this event (XEP-0359, `by` the service itself).
    const sid = message.getChildren('stanza-id', NS.SID).find((s) => normalizeJid(String(s.attrs.by ?? '')) === from)?.attrs.id as string | undefined;
    if (f.live.catchingUp) {
      const at = f.live.arrivals++;
      const touched = f.live.liveItems;
      const supersedes = sid !== undefined && f.live.taken?.has(sid) !== true ? f.live.supersedes : undefined;
      if (sid) f.live.liveSids?.add(sid);
      for (const child of items?.children ?? []) {
        if (typeof child === 'string' || (child.name !== 'item' && child.name !== 'retract') || child.attrs.id === undefined) continue;
        const id = String(child.attrs.id);
        if (!touched?.has(id)) touched?.set(id, at);
        supersedes?.add(id);
      }
    }
    // A purge has an archive id too: applied while later items are left, it would move the position past them.
    if (sid && (items || event.getChild('purge')) && this.leaveToHistory(f)) return true;
    const entry = sid ? { id: sid } : undefined;
    if (entry) f.live.queue.push(entry);
    let waiting = 0;
    for (const child of items?.children ?? []) if (typeof child !== 'string') waiting++;
    this.backlog += waiting;
    f.live.inFlight++;
    if (f.rereads) for (const child of items?.children ?? []) if (typeof child !== 'string' && f.rereads.has(String(child.attrs.id))) f.rereads.set(String(child.attrs.id), 1);
    let ok = false;
    const failed = new Set<string>();
    try {
      ok = await this.applyEvent(from, node, event, failed);
    } finally {
      this.backlog -= waiting;
      f.live.inFlight--;
      this.backlogChanged();
    }
    if (entry) this.settle(f, entry, ok);
    if (!ok && failed.size > 0) this.applyAgain(f, sid, failed);
    if (event.getChild('delete') || (sub && sub.attrs.subscription === 'none')) {
      this.ended(f);
      this.followed.delete(key(from, node));
      this.o.log.info('partner ended our subscription', { service: from, node });
    }
    return true;
  }
}
