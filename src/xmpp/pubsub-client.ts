// The requesting side of pub/sub that a Hermod speaks to other services (its partners): service
// discovery (XEP-0030 disco#info, disco#items paged with XEP-0059 RSM), subscribe and
// unsubscribe (XEP-0060 §6.1, §6.2), a node's items in RSM pages or by id (§6.5, §6.5.8), and the
// replay of a node's history (XEP-0313 on a pub/sub node, RSM paged). Requests go out through
// the component's IqCaller; MAM results arrive as messages before the query's answer, so the
// message route hands them to `handleResult`. The requests are built here only: callers
// (src/replication/partners.ts, ajatus.ts) never build these stanzas themselves.
//
// Errors: every method rejects with the IqError (src/xmpp/iq-error.ts) when the service answers with an
// error (its condition, e.g. item-not-found, forbidden) or not at all (remote-server-timeout,
// service-unavailable when offline); with PubsubClientError when a result lacks what the XEP
// requires of it (a MAM answer without <fin/>).

import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import type { IqCaller } from '../component/iq-caller.ts';
import { buildForm, findForm, parseForm } from './forms.ts';
import { IqError } from './iq-error.ts';
import { normalizeJid } from './jid.ts';
import { NS } from './ns.ts';

/** The requests a PubsubClient makes: the component's IqCaller (or anything that answers as it does). */
export type IqRequester = Pick<IqCaller, 'request'>;

export class PubsubClientError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PubsubClientError';
  }
}

/** What disco#info says of an entity (or one of its nodes). */
export interface DiscoInfo {
  identities: Array<{ category: string; type: string; name?: string }>;
  features: string[];
}

/** One disco#items entry. */
export interface DiscoItem {
  jid: string;
  node?: string;
  name?: string;
}

/** One RSM page: its entries and the page's last UID (absent on an empty or unpaged answer). */
export interface Paged<T> {
  entries: T[];
  last?: string;
}

/** Where an RSM page starts: the first `max` entries after `after`, or (before '') the last `max`. */
export interface PageAt {
  max: number;
  after?: string;
  /** '' asks for the last page. */
  before?: string;
}

/** One entry of a node's history: its archive id and the forwarded event message. */
export interface HistoryEntry {
  id: string;
  message: Element;
}

/** One page of a node's history (XEP-0313 §4.3): its entries, whether it reached the end, and the page's last id. */
export interface HistoryPage extends Paged<HistoryEntry> {
  complete: boolean;
}

/** Longest wait for a history page, in ms (the results stream before the answer). */
const HISTORY_TIMEOUT_MS = 60_000;
/** The most pages a listing reads (a service that never stops paging is cut off there). */
const MAX_PAGES = 100_000;
/** Most nodes read from one service's listing (nodes()): a bound on what a service can make us hold. */
const MAX_NODES = 100_000;

/** An RSM <set/> asking for one page (XEP-0059 §2). */
export function rsmSet(page: PageAt): Element {
  const set = new Element('set', { xmlns: NS.RSM });
  set.c('max').t(String(page.max));
  if (page.after !== undefined) set.c('after').t(page.after);
  if (page.before !== undefined) set.c('before').t(page.before);
  return set;
}

/** The <last/> of an RSM <set/> under `parent`, if any. */
const lastOf = (parent: Element | undefined): string | undefined => parent?.getChild('set', NS.RSM)?.getChildText('last') ?? undefined;
/** The <first/> of an RSM <set/> under `parent`, if any. */
const firstOf = (parent: Element | undefined): string | undefined => parent?.getChild('set', NS.RSM)?.getChildText('first') ?? undefined;

/**
 * How long a history query waits, after its <fin/>, for result messages the <fin/> names or
 * counts (its RSM first and last; the count from the first's index) that have not arrived yet
 * (ms). On one stream they always come first; with
 * several Hermods on one component JID, results and <fin/> may reach this process by different
 * ways (one relayed through the store: src/cluster/relay.ts).
 */
const RESULTS_WAIT_MS = 10_000;

/** A history query under way: the service asked, the results received so far (and every result id, with or without a message), and who waits for more. */
interface Query {
  service: string;
  /** The page size asked for: results beyond it are not kept (a service sending more is not let grow our memory). */
  max: number;
  entries: HistoryEntry[];
  ids: Set<string>;
  arrived?: () => void;
}

export class PubsubClient {
  /** History queries under way: queryid -> the service asked and the results received so far. */
  private readonly queries = new Map<string, Query>();
  /** Query ids are unique per client, so two clients of one component never claim each other's results. */
  private readonly prefix = `h${randomBytes(3).toString('hex')}-`;
  private counter = 0;

  constructor(
    private readonly iq: IqRequester,
    /** The JID this client subscribes as (the component's). */
    readonly self: string,
  ) {}

  /** disco#info of an entity, or of one of its nodes (XEP-0030 §3.1). */
  async info(jid: string, node?: string): Promise<DiscoInfo> {
    const res = await this.iq.request(jid, 'get', new Element('query', { xmlns: NS.DISCO_INFO, ...(node !== undefined ? { node } : {}) }));
    const query = res.getChild('query', NS.DISCO_INFO);
    return {
      identities: (query?.getChildren('identity') ?? []).map((i) => ({ category: String(i.attrs.category ?? ''), type: String(i.attrs.type ?? ''), ...(i.attrs.name !== undefined ? { name: String(i.attrs.name) } : {}) })),
      features: (query?.getChildren('feature') ?? []).map((f) => String(f.attrs.var ?? '')),
    };
  }

  /** One page of disco#items of an entity or one of its nodes (XEP-0030 §4.1, RSM when `page` is given). */
  async items(jid: string, options: { node?: string; page?: PageAt } = {}): Promise<Paged<DiscoItem>> {
    const query = new Element('query', { xmlns: NS.DISCO_ITEMS, ...(options.node !== undefined ? { node: options.node } : {}) });
    if (options.page) query.cnode(rsmSet(options.page));
    const res = await this.iq.request(jid, 'get', query);
    const q = res.getChild('query', NS.DISCO_ITEMS);
    const entries = (q?.getChildren('item') ?? []).map((i) => ({
      jid: String(i.attrs.jid ?? ''),
      ...(i.attrs.node !== undefined ? { node: String(i.attrs.node) } : {}),
      ...(i.attrs.name !== undefined ? { name: String(i.attrs.name) } : {}),
    }));
    const last = lastOf(q);
    return { entries, ...(last !== undefined ? { last } : {}) };
  }

  /** Every node a service lists at its top level (disco#items, read in RSM pages of `pageSize`; the first MAX_NODES or a page beyond). */
  async nodes(service: string, pageSize = 500): Promise<string[]> {
    const nodes: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < MAX_PAGES && nodes.length < MAX_NODES; page++) {
      const { entries, last } = await this.items(service, { page: { max: pageSize, ...(after !== undefined ? { after } : {}) } });
      nodes.push(...entries.flatMap((i) => (i.node ? [i.node] : [])));
      if (!last || entries.length === 0) break;
      after = last;
    }
    return nodes;
  }

  /** Subscribes this client's JID to a node (XEP-0060 §6.1); resolves to the <subscription/> answered, if any. */
  async subscribe(service: string, node: string): Promise<Element | undefined> {
    const res = await this.iq.request(service, 'set', new Element('pubsub', { xmlns: NS.PUBSUB }).c('subscribe', { node, jid: this.self }).up());
    return res.getChild('pubsub', NS.PUBSUB)?.getChild('subscription') ?? undefined;
  }

  /**
   * This client's subscription options form for a node (XEP-0060 §6.3.2): field var (e.g.
   * `pubsub#digest`) -> its values, FORM_TYPE left out (forms.ts parseForm); `subid` for a JID
   * with several subscriptions. Rejects with the service's IqError, or a bad-request PubsubError
   * for a malformed form.
   */
  async subscriptionOptions(service: string, node: string, subid?: string): Promise<Map<string, string[]>> {
    const res = await this.iq.request(service, 'get', new Element('pubsub', { xmlns: NS.PUBSUB }).c('options', { node, jid: this.self, ...(subid ? { subid } : {}) }).up());
    const x = findForm(res.getChild('pubsub', NS.PUBSUB)?.getChild('options'));
    return x ? parseForm(x).fields : new Map();
  }

  /**
   * Submits this client's subscription options for a node (XEP-0060 §6.3.5): `fields` name ->
   * value, e.g. `{ 'pubsub#digest': '1' }`. Rejects with the service's IqError (bad-request with
   * invalid-options when it does not take them).
   */
  async configureSubscription(service: string, node: string, fields: Record<string, string>, subid?: string): Promise<void> {
    const form = buildForm(
      'submit',
      NS.PUBSUB_SUBSCRIBE_OPTIONS,
      Object.entries(fields).map(([name, value]) => ({ var: name, values: [value] })),
    );
    await this.iq.request(service, 'set', new Element('pubsub', { xmlns: NS.PUBSUB }).c('options', { node, jid: this.self, ...(subid ? { subid } : {}) }).cnode(form).root());
  }

  /**
   * The nodes of `service` this client's JID holds a subscription to, in any state (XEP-0060
   * §5.6); each node once. Rejects with the service's IqError (e.g. feature-not-implemented).
   */
  async subscribedNodes(service: string): Promise<string[]> {
    const res = await this.iq.request(service, 'get', new Element('pubsub', { xmlns: NS.PUBSUB }).c('subscriptions').up());
    const subs = res.getChild('pubsub', NS.PUBSUB)?.getChild('subscriptions')?.getChildren('subscription') ?? [];
    const ours = subs.filter((s) => normalizeJid(String(s.attrs.jid ?? '')) === normalizeJid(this.self) && typeof s.attrs.node === 'string');
    return [...new Set(ours.map((s) => s.attrs.node as string))];
  }

  /** Unsubscribes this client's JID from a node (XEP-0060 §6.2). */
  async unsubscribe(service: string, node: string): Promise<void> {
    await this.iq.request(service, 'set', new Element('pubsub', { xmlns: NS.PUBSUB }).c('unsubscribe', { node, jid: this.self }).up());
  }

  /** One RSM page of a node's items (XEP-0060 §6.5.4 with XEP-0059), oldest first as the service pages them. */
  async itemsPage(service: string, node: string, page: PageAt): Promise<Paged<Element>> {
    const request = new Element('pubsub', { xmlns: NS.PUBSUB }).c('items', { node }).up();
    request.cnode(rsmSet(page));
    const pubsub = (await this.iq.request(service, 'get', request)).getChild('pubsub', NS.PUBSUB);
    const last = lastOf(pubsub);
    return { entries: pubsub?.getChild('items')?.getChildren('item') ?? [], ...(last !== undefined ? { last } : {}) };
  }

  /** The items of a node with these ids (XEP-0060 §6.5.8); ids the node lacks are absent from the answer. */
  async itemsById(service: string, node: string, ids: string[]): Promise<Element[]> {
    const items = new Element('items', { node });
    for (const id of ids) items.c('item', { id });
    const res = await this.iq.request(service, 'get', new Element('pubsub', { xmlns: NS.PUBSUB }).cnode(items).up());
    return res.getChild('pubsub', NS.PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
  }

  /**
   * One page of a node's history (XEP-0313 §4 on a pub/sub node, paged as `page` says): the
   * result messages that arrived for the query (through handleResult), and its <fin/>. Rejects
   * with PubsubClientError when the answer has no <fin/>. Results the <fin/> counts (its RSM
   * first, last, and how many: a Hermod's `<page results/>`, else the count from the first's
   * index) that have not arrived are waited for, up to
   * RESULTS_WAIT_MS; then it rejects with an IqError remote-server-timeout (undecided: the page
   * is asked again) unless the first and last did arrive. Entries are in arrival order.
   */
  async history(service: string, node: string, page: PageAt, timeoutMs = HISTORY_TIMEOUT_MS): Promise<HistoryPage> {
    const queryid = `${this.prefix}${(++this.counter).toString(36)}`;
    const entry: Query = { service: normalizeJid(service) ?? service, max: page.max, entries: [], ids: new Set() };
    this.queries.set(queryid, entry);
    try {
      const res = await this.iq.request(service, 'set', new Element('query', { xmlns: NS.MAM, node, queryid }).cnode(rsmSet(page)).up(), timeoutMs);
      const fin = res.getChild('fin', NS.MAM);
      if (!fin) throw new PubsubClientError(`${service} answered a history query on ${node} without <fin/>`);
      const last = lastOf(fin);
      const first = firstOf(fin);
      // How many results the page has, when the <fin/> says where it starts (XEP-0059: the
      // first's index, and the count); else its first and last are what can be checked.
      const set = fin.getChild('set', NS.RSM);
      const count = Number.parseInt(set?.getChildText('count') ?? '', 10);
      const index = Number.parseInt(String(set?.getChild('first')?.attrs.index ?? ''), 10);
      // A Hermod says how many results the page has (a page cut by bytes has fewer than the count implies).
      const said = Number.parseInt(String(fin.getChild('page', NS.HERMOD_PUBSUB)?.attrs.results ?? ''), 10);
      const expected = Number.isFinite(said) ? Math.max(0, Math.min(page.max, said)) : Number.isFinite(count) && Number.isFinite(index) ? Math.max(0, Math.min(page.max, count - index)) : 0;
      const ends = (): boolean => (first === undefined || entry.ids.has(first)) && (last === undefined || entry.ids.has(last));
      const whole = (): boolean => ends() && entry.ids.size >= expected;
      if (!whole()) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, RESULTS_WAIT_MS);
          timer.unref();
          entry.arrived = () => {
            if (!whole()) return;
            clearTimeout(timer);
            resolve();
          };
        });
        // Its first and last came: a count the service got wrong does not fail the page for ever.
        if (!ends()) throw new IqError('remote-server-timeout', undefined, `the history results of ${node} named by its <fin/> did not arrive within ${RESULTS_WAIT_MS} ms of it`, service, 'wait');
      }
      return { entries: entry.entries, complete: fin.attrs.complete === 'true', ...(last !== undefined ? { last } : {}) };
    } finally {
      this.queries.delete(queryid);
    }
  }

  /** The id of the newest entry of a node's history (undefined when it has none). */
  async historyEnd(service: string, node: string): Promise<string | undefined> {
    return (await this.history(service, node, { max: 1, before: '' })).last;
  }

  /**
   * Takes a MAM result message (XEP-0313 §4.2) for one of this client's queries under way, from
   * the service that query asked; false when it is not one (another client's, or forged).
   */
  handleResult(message: Element): boolean {
    const result = message.getChild('result', NS.MAM);
    const query = result && this.queries.get(String(result.attrs.queryid ?? ''));
    if (!result || !query || normalizeJid(String(message.attrs.from ?? '')) !== query.service) return false;
    const forwarded = result.getChild('forwarded', NS.FORWARD)?.getChild('message');
    const id = String(result.attrs.id ?? '');
    // A result again, or more than the page asked for: taken off the wire, not kept.
    if (query.ids.has(id) || query.ids.size >= query.max) return true;
    query.ids.add(id);
    if (forwarded) query.entries.push({ id, message: forwarded });
    query.arrived?.();
    return true;
  }
}
