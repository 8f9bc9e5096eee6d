// Subscribing side: partners are contacts that carry a JID. For each, Hermod discovers the
// partner's Hermod service (the JID itself if it is one, else the services on the JID's domain
// that identify as pubsub/service with HERMOD_FEATURE), lists its tag nodes, subscribes (as the
// component JID) to those the partner settings say to follow, and catches up on each node's
// items — at start, at an interval and when a contact or partner setting changes. Notifications
// are accepted only from a service/node we subscribed to; the sink writes them.
// Generic over what is replicated: Ajatus and Midgard each give it a PartnerSink (how a leaf or
// a retraction is written locally), which partner nodes they replicate, and partner settings.

import { Element } from 'ltx';
import { IqCaller } from '../component/iq-caller.ts';
import { IqError } from '../xmpp/iq-error.ts';
import type { Logger } from '../log.ts';
import { normalizeJid, parseJid } from '../xmpp/jid.ts';
import { NS } from '../xmpp/ns.ts';
import type { PartnerSettings } from './settings.ts';

/** Disco feature by which Hermod services recognise each other. */
export const HERMOD_FEATURE = 'urn:hermod:replication:0';
const RSM = 'http://jabber.org/protocol/rsm';
const MAM = 'urn:xmpp:mam:2';
const FORWARD = 'urn:xmpp:forward:0';

/** Durable per-node position in a partner's history (XEP-0313 archive id). */
export interface HistoryPositions {
  get(service: string, node: string): Promise<string | undefined>;
  set(service: string, node: string, id: string): Promise<void>;
}

/** The local side of replication: writes what partners publish. */
export interface PartnerSink {
  /** Writes one item (leaf) of a followed node; false when it was skipped (logged by the sink). */
  writeItem(service: string, node: string, item: Element, partner?: string): Promise<boolean>;
  /** An item retracted from a followed node; `followed` says whether another node of that service is followed. */
  retract(service: string, node: string, itemId: string, followed: (node: string) => boolean, partner?: string): Promise<void>;
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
}

interface Followed {
  service: string;
  node: string;
}

const key = (service: string, node: string): string => `${service}\0${node}`;

export class PartnerManager {
  private readonly partners = new Set<string>();
  private readonly followed = new Map<string, Followed>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private started = false;
  private rerun = false;
  /** Services that advertise MAM on nodes. */
  private readonly withHistory = new Set<string>();
  /** History queries under way: queryid -> the event messages received for it. */
  private readonly queries = new Map<string, { service: string; messages: Element[] }>();
  private queryCounter = 0;
  /** Which partner (contact JID) each discovered service belongs to. */
  private readonly partnerOf = new Map<string, string>();

  constructor(private readonly o: PartnerManagerOptions) {}

  /** Subscriptions in force, as "service node" strings (for status and tests). */
  subscriptions(): string[] {
    return [...this.followed.values()].map((f) => `${f.service} ${f.node}`).sort();
  }

  addPartner(raw: string): void {
    const jid = normalizeJid(raw);
    if (!jid) {
      this.o.log.warn('contact JID is not valid; ignored', { jid: raw });
      return;
    }
    if (this.partners.has(jid)) return;
    this.partners.add(jid);
    this.o.log.info('partner found', { jid });
    this.discoverSoon();
  }

  /**
   * Ends a partnership: no more discovery for that JID, and every node of its services is
   * unsubscribed and no longer accepted (after the discovery under way, which may still add some).
   */
  async removePartner(raw: string): Promise<void> {
    const jid = normalizeJid(raw);
    if (!jid || !this.partners.delete(jid)) return;
    await this.running;
    const services = [...this.partnerOf].filter(([, p]) => p === jid).map(([service]) => service);
    for (const service of services) this.partnerOf.delete(service);
    const ended = [...this.followed.values()].filter((f) => services.includes(f.service));
    for (const f of ended) await this.unfollow(f.service, f.node);
    this.o.log.info('partner removed', { jid, unsubscribed: ended.map((f) => `${f.service} ${f.node}`) });
    if (ended.length > 0 && this.partners.size > 0) this.discoverSoon(); // a service another partner shares is followed again
  }

  /** Call once the component is online. */
  start(): void {
    this.started = true;
    this.o.settings.on('partner', () => this.discoverSoon());
    this.discoverSoon();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Runs discovery now (or right after the run under way), then again after the interval. */
  discoverSoon(): void {
    if (this.stopped || !this.started) return;
    if (this.running) {
      this.rerun = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = (async () => {
      do {
        this.rerun = false;
        for (const partner of [...this.partners]) {
          try {
            await this.discover(partner);
          } catch (err) {
            this.o.log.warn('partner discovery failed', { partner, reason: String(err) });
          }
        }
      } while (this.rerun && !this.stopped);
    })().finally(() => {
      this.running = undefined;
      if (!this.stopped) this.timer = setTimeout(() => this.discoverSoon(), this.o.intervalMs);
    });
  }

  private async info(jid: string, node?: string): Promise<{ identities: Element[]; features: string[] }> {
    const res = await this.o.iq.request(jid, 'get', new Element('query', { xmlns: NS.DISCO_INFO, ...(node ? { node } : {}) }));
    const query = res.getChild('query', NS.DISCO_INFO);
    return { identities: query?.getChildren('identity') ?? [], features: (query?.getChildren('feature') ?? []).map((f) => f.attrs.var as string) };
  }

  private async isHermod(jid: string): Promise<boolean> {
    try {
      const { identities, features } = await this.info(jid);
      if (features.includes(MAM)) this.withHistory.add(jid);
      return identities.some((i) => i.attrs.category === 'pubsub' && i.attrs.type === 'service') && features.includes(HERMOD_FEATURE);
    } catch {
      return false;
    }
  }

  /** The partner's Hermod services: the JID itself, or services on its domain. */
  private async services(partner: string): Promise<string[]> {
    if (await this.isHermod(partner)) return [partner];
    const domain = parseJid(partner)?.domain as string;
    const res = await this.o.iq.request(domain, 'get', new Element('query', { xmlns: NS.DISCO_ITEMS }));
    const candidates = (res.getChild('query', NS.DISCO_ITEMS)?.getChildren('item') ?? []).filter((i) => !i.attrs.node).map((i) => i.attrs.jid as string);
    const found: string[] = [];
    for (const jid of candidates) if (jid !== this.o.self && (await this.isHermod(jid))) found.push(jid);
    return found;
  }

  private async nodes(service: string): Promise<string[]> {
    const nodes: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 1000; page++) {
      const query = new Element('query', { xmlns: NS.DISCO_ITEMS });
      const set = query.c('set', { xmlns: RSM });
      set.c('max').t('500');
      if (after) set.c('after').t(after);
      const res = await this.o.iq.request(service, 'get', query);
      const q = res.getChild('query', NS.DISCO_ITEMS);
      const items = (q?.getChildren('item') ?? []).map((i) => i.attrs.node as string).filter(Boolean);
      nodes.push(...items);
      const last = q?.getChild('set', RSM)?.getChildText('last');
      if (!last || items.length === 0) break;
      after = last;
    }
    return nodes;
  }

  private async discover(partner: string): Promise<void> {
    const follow = this.o.settings.partner(partner).follow;
    const services = follow === 'none' ? [] : await this.services(partner);
    for (const service of services) this.partnerOf.set(service, partner);
    if (services.length === 0 && follow !== 'none') this.o.log.debug('no Hermod service found for partner', { partner });
    for (const service of services) {
      const nodes = await this.nodes(service);
      const listed = follow === 'all' ? nodes.filter((n) => this.o.offers(n)) : nodes.filter((n) => (follow as string[]).includes(n));
      const wanted: string[] = [];
      for (const node of listed) if (!this.o.mayFollow || (await this.o.mayFollow(partner, node))) wanted.push(node);
      for (const node of wanted) if (!this.followed.has(key(service, node))) await this.follow(service, node);
      for (const f of [...this.followed.values()]) {
        if (f.service === service && !wanted.includes(f.node)) await this.unfollow(f.service, f.node);
      }
    }
  }

  private async follow(service: string, node: string): Promise<void> {
    const k = key(service, node);
    this.followed.set(k, { service, node }); // notifications may arrive before the result
    try {
      await this.o.iq.request(service, 'set', new Element('pubsub', { xmlns: NS.PUBSUB }).c('subscribe', { node, jid: this.o.self }).up());
      this.o.log.info('subscribed to partner node', { service, node });
    } catch (err) {
      this.followed.delete(k);
      const refused = err instanceof IqError;
      this.o.log[refused ? 'info' : 'warn']('partner node refused the subscription', { service, node, reason: String(err) });
      return;
    }
    await this.catchUp(service, node);
  }

  private async unfollow(service: string, node: string): Promise<void> {
    this.followed.delete(key(service, node));
    try {
      await this.o.iq.request(service, 'set', new Element('pubsub', { xmlns: NS.PUBSUB }).c('unsubscribe', { node, jid: this.o.self }).up());
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
  private async catchUp(service: string, node: string): Promise<void> {
    const positions = this.o.positions && this.withHistory.has(service) ? this.o.positions : undefined;
    const position = await positions?.get(service, node);
    this.o.log.debug('catching up', { service, node, history: positions !== undefined, position });
    if (positions && position !== undefined) {
      try {
        const replayed = await this.replayHistory(service, node, position, positions);
        this.o.log.info('caught up with partner node from its history', { service, node, entries: replayed });
        return;
      } catch (err) {
        this.o.log.warn('history replay failed; reading current items instead', { service, node, reason: String(err) });
      }
    }
    const end = positions
      ? await this.historyEnd(service, node).catch((err: unknown) => {
          this.o.log.warn('partner history not readable; catch-up reads current items only', { service, node, reason: String(err) });
          return undefined;
        })
      : undefined;
    let after: string | undefined;
    let count = 0;
    for (let page = 0; page < 100_000; page++) {
      const items = new Element('items', { node });
      const request = new Element('pubsub', { xmlns: NS.PUBSUB }).cnode(items).up();
      const set = request.c('set', { xmlns: RSM });
      set.c('max').t('100');
      if (after) set.c('after').t(after);
      const res = await this.o.iq.request(service, 'get', request);
      const pubsub = res.getChild('pubsub', NS.PUBSUB);
      const got = pubsub?.getChild('items')?.getChildren('item') ?? [];
      for (const item of got) if (await this.o.sink.writeItem(service, node, item, this.partnerOf.get(service))) count++;
      const last = pubsub?.getChild('set', RSM)?.getChildText('last');
      if (!last || got.length === 0) break;
      after = last;
    }
    if (positions && end) await positions.set(service, node, end);
    this.o.log.info('caught up with partner node', { service, node, documents: count });
  }

  private async historyQuery(service: string, node: string, rsm: Element): Promise<{ messages: Element[]; fin: Element }> {
    const queryid = `h${(++this.queryCounter).toString(36)}`;
    const entry = { service, messages: [] as Element[] };
    this.queries.set(queryid, entry);
    try {
      const res = await this.o.iq.request(service, 'set', new Element('query', { xmlns: MAM, node, queryid }).cnode(rsm).up(), 60_000);
      const fin = res.getChild('fin', MAM);
      if (!fin) throw new Error('history query answered without <fin/>');
      return { messages: entry.messages, fin };
    } finally {
      this.queries.delete(queryid);
    }
  }

  /** The id of the newest history entry of a node (undefined when it has none). */
  private async historyEnd(service: string, node: string): Promise<string | undefined> {
    const rsm = new Element('set', { xmlns: RSM });
    rsm.c('max').t('1');
    rsm.c('before');
    const { fin } = await this.historyQuery(service, node, rsm);
    return fin.getChild('set', RSM)?.getChildText('last') ?? undefined;
  }

  private async replayHistory(service: string, node: string, position: string, positions: HistoryPositions): Promise<number> {
    let after = position;
    let replayed = 0;
    for (let page = 0; page < 100_000; page++) {
      const rsm = new Element('set', { xmlns: RSM });
      rsm.c('max').t('100');
      rsm.c('after').t(after);
      const { messages, fin } = await this.historyQuery(service, node, rsm);
      for (const message of messages) {
        await this.applyEvent(service, node, message.getChild('event', NS.PUBSUB_EVENT));
        replayed++;
      }
      const last = fin.getChild('set', RSM)?.getChildText('last');
      if (last) {
        after = last;
        await positions.set(service, node, last);
      }
      if (fin.attrs.complete === 'true' || !last || messages.length === 0) break;
    }
    return replayed;
  }

  /** Writes the items and applies the retractions of one event of a followed node. */
  private async applyEvent(from: string, node: string, event: Element | undefined): Promise<void> {
    const items = event?.getChild('items');
    if (!items) return;
    for (const item of items.getChildren('item')) {
      try {
        await this.o.sink.writeItem(from, node, item, this.partnerOf.get(from));
      } catch (err) {
        this.o.log.error('writing a replicated document failed', { from, node, item: item.attrs.id, reason: String(err) });
      }
    }
    for (const retract of items.getChildren('retract')) {
      try {
        await this.o.sink.retract(from, node, retract.attrs.id as string, (other) => other !== node && this.followed.has(key(from, other)), this.partnerOf.get(from));
      } catch (err) {
        this.o.log.error('deleting a retracted document failed', { from, node, item: retract.attrs.id, reason: String(err) });
      }
    }
  }

  /** Handles a pub/sub event message (or a history result); returns false if it was not ours. */
  async handleEvent(message: Element): Promise<boolean> {
    const result = message.getChild('result', MAM);
    if (result) {
      const query = this.queries.get(result.attrs.queryid as string);
      const forwarded = result.getChild('forwarded', FORWARD)?.getChild('message');
      if (!query || normalizeJid((message.attrs.from as string | undefined) ?? '') !== query.service) return false;
      if (forwarded) query.messages.push(forwarded);
      return true;
    }
    const event = message.getChild('event', NS.PUBSUB_EVENT);
    if (!event) return false;
    const from = normalizeJid((message.attrs.from as string | undefined) ?? '');
    const items = event.getChild('items');
    const node = (items ?? event.getChild('delete') ?? event.getChild('purge') ?? event.getChild('subscription'))?.attrs.node as string | undefined;
    if (!from || !node || !this.followed.has(key(from, node))) {
      if (from && node) this.o.log.debug('event ignored: not from a followed node', { from, node });
      return false; // another replication of this Hermod may follow it
    }
    await this.applyEvent(from, node, event);
    const sub = event.getChild('subscription');
    if (event.getChild('delete') || (sub && sub.attrs.subscription === 'none')) {
      this.followed.delete(key(from, node));
      this.o.log.info('partner ended our subscription', { service: from, node });
    }
    return true;
  }
}
