// Subscribing side: partners are contacts that carry a JID. For each, Hermod discovers the
// partner's Hermod service (the JID itself if it is one, else the services on the JID's domain
// that identify as pubsub/service with HERMOD_FEATURE), lists its tag nodes, subscribes (as the
// component JID) to those the partner settings say to follow, and catches up on each node's
// items — at start, at an interval and when a contact or partner setting changes. Notifications
// are accepted only from a service/node we subscribed to; the sink writes them.

import { Element } from 'ltx';
import { IqCaller, IqRequestError } from '../component/iq-caller.ts';
import { parseEntry, type CouchDoc } from '../codecs/couch-doc.ts';
import type { Logger } from '../log.ts';
import type { CouchSink } from '../sinks/couchdb.ts';
import { normalizeJid, parseJid } from '../xmpp/jid.ts';
import { NS } from '../xmpp/ns.ts';
import { TAG_PREFIX } from './ajatus-publisher.ts';
import type { AppSettings } from './settings.ts';

/** Disco feature by which Hermod services recognise each other. */
export const HERMOD_FEATURE = 'urn:hermod:replication:0';
const RSM = 'http://jabber.org/protocol/rsm';

export interface PartnerManagerOptions {
  iq: IqCaller;
  self: string;
  settings: AppSettings;
  sink: CouchSink;
  log: Logger;
  intervalMs: number;
  /** The document's tags (per the profile). */
  tagsOf: (doc: CouchDoc) => string[];
}

interface Followed {
  service: string;
  node: string;
}

const key = (service: string, node: string): string => `${service}\0${node}`;

export class PartnerManager {
  private readonly partners = new Set<string>();
  private readonly tagsOf: (doc: CouchDoc) => string[];
  private readonly followed = new Map<string, Followed>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private started = false;
  private rerun = false;

  constructor(private readonly o: PartnerManagerOptions) {
    this.tagsOf = o.tagsOf;
  }

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
    if (services.length === 0 && follow !== 'none') this.o.log.debug('no Hermod service found for partner', { partner });
    for (const service of services) {
      const offered = (await this.nodes(service)).filter((n) => n.startsWith(TAG_PREFIX));
      const wanted = follow === 'all' ? offered : offered.filter((n) => (follow as string[]).includes(n));
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
      const refused = err instanceof IqRequestError;
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

  /** Fetches a node's items (RSM pages when offered) and writes each: what notifications missed. */
  private async catchUp(service: string, node: string): Promise<void> {
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
      for (const item of got) if (await this.writeItem(service, node, item)) count++;
      const last = pubsub?.getChild('set', RSM)?.getChildText('last');
      if (!last || got.length === 0) break;
      after = last;
    }
    this.o.log.info('caught up with partner node', { service, node, documents: count });
  }

  private async writeItem(service: string, node: string, item: Element): Promise<boolean> {
    const payload = item.getChildElements()[0];
    if (!payload) return false;
    let docs: CouchDoc[];
    try {
      docs = parseEntry(payload);
    } catch (err) {
      this.o.log.warn('leaf skipped: not a replicated document', { service, node, item: item.attrs.id, reason: String(err) });
      return false;
    }
    if (docs[0]?._id !== item.attrs.id) {
      this.o.log.warn('leaf skipped: item id differs from document id', { service, node, item: item.attrs.id, doc: docs[0]?._id });
      return false;
    }
    await this.o.sink.write(docs);
    return true;
  }

  /** Whether the document's tags put it on another node of this service that we follow. */
  private offeredElsewhere(service: string, retractedFrom: string, doc: CouchDoc): boolean {
    return this.tagsOf(doc).some((tag) => {
      const node = `${TAG_PREFIX}${tag}`;
      return node !== retractedFrom && this.followed.has(key(service, node));
    });
  }

  /** Handles a pub/sub event message; returns false if it was not for replication. */
  async handleEvent(message: Element): Promise<boolean> {
    const event = message.getChild('event', NS.PUBSUB_EVENT);
    if (!event) return false;
    const from = normalizeJid((message.attrs.from as string | undefined) ?? '');
    const items = event.getChild('items');
    const node = (items ?? event.getChild('delete') ?? event.getChild('purge') ?? event.getChild('subscription'))?.attrs.node as string | undefined;
    if (!from || !node || !this.followed.has(key(from, node))) {
      if (from && node) this.o.log.debug('event ignored: not from a followed node', { from, node });
      return from !== undefined && node !== undefined && node.startsWith(TAG_PREFIX);
    }
    if (items) {
      for (const item of items.getChildren('item')) {
        try {
          await this.writeItem(from, node, item);
        } catch (err) {
          this.o.log.error('writing a replicated document failed', { from, node, item: item.attrs.id, reason: String(err) });
        }
      }
      for (const retract of items.getChildren('retract')) {
        try {
          await this.o.sink.remove(retract.attrs.id as string, (doc) => this.offeredElsewhere(from, node, doc));
        } catch (err) {
          this.o.log.error('deleting a retracted document failed', { from, node, item: retract.attrs.id, reason: String(err) });
        }
      }
    }
    const sub = event.getChild('subscription');
    if (event.getChild('delete') || (sub && sub.attrs.subscription === 'none')) {
      this.followed.delete(key(from, node));
      this.o.log.info('partner ended our subscription', { service: from, node });
    }
    return true;
  }
}
