// XEP-0060 on the wire: one handler per use case, keyed like Prosody's mod_pubsub
// ("get items", "set publish", "owner set affiliations"). Each parses the request into typed
// arguments, calls the service and builds the result. No permission logic lives here.

import { Element } from 'ltx';
import { PAGE_LIMIT, type PubsubService } from '../pubsub/service.ts';
import { DEFAULT_SUBSCRIPTION_OPTIONS, optionsOf } from '../pubsub/subscription-options.ts';
import { AFFILIATIONS, type Affiliation, type Item, type NodeConfig, type Subscription, type SubscriptionState } from '../pubsub/types.ts';
import { badRequest, ERROR_TABLE, StanzaError } from './errors.ts';
import { findForm } from './forms.ts';
import { normalizeJid } from './jid.ts';
import { configForm, parseConfigForm, parsePublishOptions } from './node-config-form.ts';
import { NS } from './ns.ts';
import { packable, packedPayload } from './packed.ts';
import { appendRaw, serializePayload } from './raw.ts';
import { routeKey, type IqHandler, type IqRequest } from './request.ts';
import { fitPage, parseRsm, rsmResult } from './rsm.ts';
import { parseSubscribeOptionsForm, subscribeOptionsForm } from './subscribe-options-form.ts';

type VerbHandler = (request: IqRequest, verb: Element, pubsub: Element) => Promise<Element | undefined>;

/** Child elements of <pubsub/> that accompany a verb rather than being one. */
const MODIFIERS = new Set(['configure', 'options', 'publish-options', 'set']);

const nodeAttr = (el: Element): string | undefined => {
  const node = el.attrs.node as string | undefined;
  return node === undefined || node === '' ? undefined : node;
};

function jidAttr(el: Element, name = 'jid'): string {
  const raw = el.attrs[name] as string | undefined;
  if (raw === undefined) throw badRequest(`<${el.name}/> needs a ${name} attribute`, 'jid-required');
  const jid = normalizeJid(raw);
  if (!jid) throw badRequest(`'${raw}' is not a valid JID`, 'invalid-jid');
  return jid;
}

const pubsubResult = (ns: string, ...children: Element[]): Element => {
  const el = new Element('pubsub', { xmlns: ns });
  for (const child of children) el.cnode(child);
  return el;
};

function subscriptionElement(sub: Subscription, withNode: boolean): Element {
  return new Element('subscription', {
    ...(withNode ? { node: sub.node } : {}),
    jid: sub.jid,
    subscription: sub.state,
    ...(sub.state !== 'none' ? { subid: sub.subid } : {}),
  });
}

/**
 * `<item id publisher>` with its payload (`withPayload`), packed for a subscriber with Hermod's
 * packed option where the payload is packable (src/xmpp/packed.ts).
 */
export function itemElement(item: Item, withPayload: boolean, packed = false): Element {
  const el = new Element('item', { id: item.id, publisher: item.publisher });
  if (!withPayload) return el;
  if (packed && packable(item)) el.children.push(packedPayload(item) as unknown as Element); // ltx writes a child that has write()
  else appendRaw(el, item.payload);
  return el;
}

function parseNotify(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw badRequest(`notify must be true, false, 1 or 0 (got '${value}')`);
}

function parseMaxItems(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value)) throw badRequest(`max_items must be a positive integer (got '${value}')`);
  return Number(value);
}

export function pubsubVerbs(service: PubsubService): Map<string, VerbHandler> {
  const verbs = new Map<string, VerbHandler>();
  const on = (type: 'get' | 'set', ns: string, name: string, handler: VerbHandler): void => {
    verbs.set(routeKey(type, ns, name), handler);
  };

  // ---- entity use cases (§6, §7) -------------------------------------------------------

  on('get', NS.PUBSUB, 'items', async (req, verb, pubsub) => {
    const node = nodeAttr(verb);
    const ids = verb.getChildren('item').map((i) => {
      const id = i.attrs.id as string | undefined;
      if (!id) throw badRequest('<item/> in an items request needs an id', 'item-required');
      return id;
    });
    // §6.5.9.2: a SubID that names none of the requester's subscriptions to the node is invalid
    // (checked once the access checks of the read have passed: they speak first).
    const subid = (verb.attrs.subid as string | undefined) || undefined;
    const checkSubid = async (): Promise<void> => {
      if (subid !== undefined && !(await service.subscriptionsOf(req.from, node)).some((s) => s.subid === subid)) throw new StanzaError(ERROR_TABLE['invalid-subid'], `no subscription of yours to ${String(node)} has SubID ${subid}`);
    };
    const itemsEl = new Element('items', { node });
    const result = pubsubResult(NS.PUBSUB, itemsEl);
    const rsm = parseRsm(pubsub, PAGE_LIMIT);
    const max = parseMaxItems(verb.attrs.max_items as string | undefined);
    if (ids.length > 0 || (max !== undefined && !rsm)) {
      // By id, or the newest max_items (§6.5.7); RSM, when given, wins over max_items.
      const query = ids.length > 0 ? { ids } : { max: Math.min(max as number, PAGE_LIMIT) };
      let found = await service.getItems(req.from, node, query);
      await checkSubid();
      // The newest max_items (oldest first), cut to about PAGE_BYTES keeping the newest; by id, as asked.
      let truncated = false;
      if (ids.length === 0) {
        const kept = fitPage({ entries: found, count: found.length, firstIndex: 0 }, (item) => item.payload.length, true).entries;
        truncated = kept.length < found.length;
        found = kept;
      }
      for (const item of found) itemsEl.cnode(itemElement(item, true));
      // More asked for than one answer carries: §6.5.4 SHOULD note the truncation (XEP-0059 count).
      if (ids.length === 0 && (truncated || (max as number) > PAGE_LIMIT)) {
        const { count } = await service.pageItemIds(req.from, node, { max: 0 });
        if (count > found.length) result.cnode(new Element('set', { xmlns: NS.RSM }).c('count').t(String(count)).up());
      }
      return result;
    }
    // All items: one page, in publication order; a truncated answer says so with RSM (§6.5.4).
    const page = fitPage(await service.pageItems(req.from, node, rsm ?? { max: PAGE_LIMIT }), (item) => item.payload.length, rsm?.before !== undefined);
    await checkSubid();
    for (const item of page.entries) itemsEl.cnode(itemElement(item, true));
    if (rsm || page.count > page.entries.length) result.cnode(rsmResult(page, page.entries.map((i) => i.id)));
    return result;
  });

  on('set', NS.PUBSUB, 'subscribe', async (req, verb, pubsub) => {
    // §6.3.7 subscribe-and-configure: an <options/> sibling with a submitted form.
    const form = findForm(pubsub.getChild('options'));
    const options = form ? parseSubscribeOptionsForm(form) : undefined;
    const sub = await service.subscribe(req.from, nodeAttr(verb), jidAttr(verb), options);
    const result = pubsubResult(NS.PUBSUB, subscriptionElement(sub, true));
    if (options) result.c('options').cnode(subscribeOptionsForm(optionsOf(sub), 'result'));
    return result;
  });

  on('get', NS.PUBSUB, 'options', async (req, verb) => {
    const node = nodeAttr(verb);
    const subid = (verb.attrs.subid as string | undefined) || undefined;
    const sub = await service.getSubscriptionOptions(req.from, node, jidAttr(verb), subid);
    const el = new Element('options', { node: sub.node, jid: sub.jid, subid: sub.subid });
    return pubsubResult(NS.PUBSUB, el.cnode(subscribeOptionsForm(optionsOf(sub))).up());
  });

  // §6.4: the default subscription options, of the service or of one node (item-not-found if none).
  on('get', NS.PUBSUB, 'default', async (_req, verb) => {
    const node = (verb.attrs.node as string | undefined) || undefined;
    if (node !== undefined) await service.metadata(node);
    return pubsubResult(NS.PUBSUB, new Element('default', node !== undefined ? { node } : {}).cnode(subscribeOptionsForm({ ...DEFAULT_SUBSCRIPTION_OPTIONS })).up());
  });

  on('set', NS.PUBSUB, 'options', async (req, verb) => {
    const form = findForm(verb);
    if (!form) throw badRequest('<options/> needs a submitted data form', 'invalid-options');
    const subid = (verb.attrs.subid as string | undefined) || undefined;
    await service.setSubscriptionOptions(req.from, nodeAttr(verb), jidAttr(verb), subid, parseSubscribeOptionsForm(form));
    return undefined;
  });

  on('set', NS.PUBSUB, 'unsubscribe', async (req, verb) => {
    await service.unsubscribe(req.from, nodeAttr(verb), jidAttr(verb), (verb.attrs.subid as string | undefined) || undefined);
    return undefined;
  });

  on('get', NS.PUBSUB, 'subscriptions', async (req, verb) => {
    const node = nodeAttr(verb);
    const subs = await service.subscriptionsOf(req.from, node);
    const el = new Element('subscriptions', node ? { node } : {});
    for (const sub of subs) el.cnode(subscriptionElement(sub, true));
    return pubsubResult(NS.PUBSUB, el);
  });

  on('get', NS.PUBSUB, 'affiliations', async (req, verb) => {
    const node = nodeAttr(verb);
    const affs = await service.affiliationsOf(req.from, node);
    const el = new Element('affiliations', node ? { node } : {});
    for (const a of affs) el.c('affiliation', { node: a.node, affiliation: a.affiliation });
    return pubsubResult(NS.PUBSUB, el);
  });

  on('set', NS.PUBSUB, 'publish', async (req, verb, pubsub) => {
    const items = verb.getChildren('item');
    if (items.length > 1) throw badRequest('publish one item per request', 'invalid-payload');
    const itemEl = items[0];
    let item: { id?: string; payload?: string } | undefined;
    if (itemEl) {
      const payloads = itemEl.getChildElements();
      if (payloads.length > 1) throw badRequest('an item carries exactly one payload element', 'invalid-payload');
      const id = (itemEl.attrs.id as string | undefined) || undefined;
      item = { ...(id ? { id } : {}), ...(payloads[0] ? { payload: serializePayload(payloads[0]) } : {}) };
    }
    const options = pubsub.getChild('publish-options');
    let preconditions: Partial<NodeConfig> | undefined;
    if (options) {
      const form = findForm(options);
      if (!form) throw badRequest('<publish-options/> must contain a data form');
      preconditions = parsePublishOptions(form);
    }
    const node = nodeAttr(verb);
    const id = await service.publish(req.from, node, { ...(item ? { item } : {}), ...(preconditions ? { preconditions } : {}) });
    // A transient notification-only node keeps no item and makes no id (§4.3).
    const published = new Element('publish', { node });
    if (id !== undefined) published.c('item', { id });
    return pubsubResult(NS.PUBSUB, published);
  });

  on('set', NS.PUBSUB, 'retract', async (req, verb) => {
    const ids = verb.getChildren('item').map((i) => {
      const id = i.attrs.id as string | undefined;
      if (!id) throw badRequest('<item/> in a retract needs an id', 'item-required');
      return id;
    });
    await service.retract(req.from, nodeAttr(verb), ids, parseNotify(verb.attrs.notify as string | undefined));
    return undefined;
  });

  on('set', NS.PUBSUB, 'create', async (req, verb, pubsub) => {
    const configure = pubsub.getChild('configure');
    const form = findForm(configure);
    const config = form ? parseConfigForm(form) : {};
    const requested = nodeAttr(verb);
    const id = await service.create(req.from, requested, config);
    // §8.1.2: an instant node's id is returned; otherwise the result may be empty.
    return requested === undefined ? pubsubResult(NS.PUBSUB, new Element('create', { node: id })) : undefined;
  });

  // ---- owner use cases (§8) ------------------------------------------------------------

  on('get', NS.PUBSUB_OWNER, 'configure', async (req, verb) => {
    const node = nodeAttr(verb);
    const config = await service.getConfig(req.from, node);
    return pubsubResult(NS.PUBSUB_OWNER, new Element('configure', { node }).cnode(configForm(config, 'form', service.accessModels())).up());
  });

  on('set', NS.PUBSUB_OWNER, 'configure', async (req, verb) => {
    const form = findForm(verb);
    if (!form) throw badRequest('configure needs a data form');
    const node = nodeAttr(verb);
    // §8.2.4: on cancel "the existing configuration MUST be applied" — nothing rewritten, nobody
    // notified; the node and the owner's right to configure it are still checked.
    if (form.attrs.type === 'cancel') await service.getConfig(req.from, node);
    else await service.configure(req.from, node, parseConfigForm(form));
    return undefined;
  });

  on('get', NS.PUBSUB_OWNER, 'default', async () => {
    return pubsubResult(NS.PUBSUB_OWNER, new Element('default').cnode(configForm(service.defaultConfig(), 'form', service.accessModels())).up());
  });

  on('set', NS.PUBSUB_OWNER, 'delete', async (req, verb) => {
    // §8.4.1: an optional <redirect uri='…'/> names the replacement node for subscribers.
    const redirect = verb.getChild('redirect');
    const uri = redirect?.attrs.uri as string | undefined;
    if (redirect && !uri) throw badRequest('<redirect/> needs a uri attribute');
    await service.delete(req.from, nodeAttr(verb), uri);
    return undefined;
  });

  on('set', NS.PUBSUB_OWNER, 'purge', async (req, verb) => {
    await service.purge(req.from, nodeAttr(verb));
    return undefined;
  });

  on('get', NS.PUBSUB_OWNER, 'subscriptions', async (req, verb) => {
    const node = nodeAttr(verb);
    const subs = await service.getSubscriptions(req.from, node);
    const el = new Element('subscriptions', { node });
    for (const sub of subs) el.cnode(subscriptionElement(sub, false));
    return pubsubResult(NS.PUBSUB_OWNER, el);
  });

  on('set', NS.PUBSUB_OWNER, 'subscriptions', async (req, verb) => {
    const changes = verb.getChildren('subscription').map((s) => {
      const state = s.attrs.subscription as string | undefined;
      if (state !== 'subscribed' && state !== 'none' && state !== 'pending' && state !== 'unconfigured') {
        throw badRequest(`subscription must be subscribed or none (got '${state ?? ''}')`);
      }
      const subid = (s.attrs.subid as string | undefined) || undefined;
      return { jid: jidAttr(s), state: state as SubscriptionState, ...(subid ? { subid } : {}) };
    });
    await service.setSubscriptions(req.from, nodeAttr(verb), changes);
    return undefined;
  });

  on('get', NS.PUBSUB_OWNER, 'affiliations', async (req, verb) => {
    const node = nodeAttr(verb);
    const affs = await service.getAffiliations(req.from, node);
    const el = new Element('affiliations', { node });
    for (const [jid, affiliation] of affs) el.c('affiliation', { jid, affiliation });
    return pubsubResult(NS.PUBSUB_OWNER, el);
  });

  on('set', NS.PUBSUB_OWNER, 'affiliations', async (req, verb) => {
    const changes = verb.getChildren('affiliation').map((a) => {
      const affiliation = a.attrs.affiliation as string | undefined;
      if (!affiliation || !(AFFILIATIONS as readonly string[]).includes(affiliation)) {
        throw badRequest(`affiliation must be one of ${AFFILIATIONS.join(', ')} (got '${affiliation ?? ''}')`);
      }
      return { jid: jidAttr(a), affiliation: affiliation as Affiliation };
    });
    await service.setAffiliations(req.from, nodeAttr(verb), changes);
    return undefined;
  });

  return verbs;
}

/** The two IQ routes (<pubsub/> in the pubsub and pubsub#owner namespaces) over the verb table. */
export function pubsubRoutes(service: PubsubService): Map<string, IqHandler> {
  const verbs = pubsubVerbs(service);
  const handle: IqHandler = async (req) => {
    const pubsub = req.child;
    const ns = pubsub.getNS() ?? '';
    const children = pubsub.getChildElements();
    // <options/> alone is the §6.3 request; beside <subscribe/> it modifies it.
    const verb = children.find((c) => !MODIFIERS.has(c.name)) ?? children.find((c) => c.name === 'options') ?? (ns === NS.PUBSUB_OWNER ? children[0] : undefined);
    if (!verb) throw badRequest('<pubsub/> without a request element');
    const handler = verbs.get(routeKey(req.type, ns, verb.name));
    if (!handler) {
      if (verbs.has(routeKey(req.type === 'get' ? 'set' : 'get', ns, verb.name))) throw badRequest(`<${verb.name}/> is not a ${req.type} request`);
      throw new StanzaError({ type: 'cancel', condition: 'feature-not-implemented', pubsub: 'unsupported', feature: verb.name }, `<${verb.name}/> is not supported by this service`);
    }
    return handler(req, verb, pubsub);
  };
  return new Map([
    [routeKey('get', NS.PUBSUB, 'pubsub'), handle],
    [routeKey('set', NS.PUBSUB, 'pubsub'), handle],
    [routeKey('get', NS.PUBSUB_OWNER, 'pubsub'), handle],
    [routeKey('set', NS.PUBSUB_OWNER, 'pubsub'), handle],
  ]);
}
