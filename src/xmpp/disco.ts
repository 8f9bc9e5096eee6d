// XEP-0030 service discovery and XEP-0128 node meta-data. The feature list is exactly what the
// handlers implement: a test compares it with the README's feature table.

import { Element } from 'ltx';
import { PAGE_LIMIT, type PubsubService } from '../pubsub/service.ts';
import { commandInfo, commandItems } from './commands.ts';
import { buildForm } from './forms.ts';
import { NS } from './ns.ts';
import { routeKey, type IqHandler } from './request.ts';
import { parseRsm, rsmResult } from './rsm.ts';

/** XEP-0060 features (disco names without the 'http://jabber.org/protocol/pubsub#' prefix). */
export const PUBSUB_FEATURES = [
  'access-authorize',
  'access-open',
  'access-whitelist',
  'config-node',
  'create-and-configure',
  'create-nodes',
  'delete-items',
  'delete-nodes',
  'get-pending',
  'instant-nodes',
  'item-ids',
  'last-published',
  'manage-affiliations',
  'manage-subscriptions',
  'member-affiliation',
  'meta-data',
  'modify-affiliations',
  'multi-subscribe',
  'outcast-affiliation',
  'persistent-items',
  'presence-notifications',
  'publish',
  'publish-only-affiliation',
  'publish-options',
  'publisher-affiliation',
  'purge-nodes',
  'retract-items',
  'retrieve-affiliations',
  'retrieve-default',
  'retrieve-default-sub',
  'retrieve-items',
  'retrieve-subscriptions',
  'rsm',
  'subscribe',
  'subscription-notifications',
  'subscription-options',
] as const;

export const SERVICE_FEATURES: readonly string[] = [
  NS.DISCO_INFO,
  NS.DISCO_ITEMS,
  NS.PUBSUB,
  ...PUBSUB_FEATURES.map((f) => `${NS.PUBSUB}#${f}`),
  NS.RSM,
  NS.COMMANDS,
  NS.MAM,
  NS.MAM_EXTENDED,
  NS.PING,
  NS.VERSION,
  // Hermod services recognise each other by this (src/replication/partners.ts).
  'urn:hermod:replication:0',
];

export interface DiscoOptions {
  service: PubsubService;
  /** The component JID (the service address). */
  jid: string;
  name: string;
  /** Features advertised while they work (e.g. access-roster with a XEP-0356 privilege). */
  extraFeatures?: () => readonly string[];
}

function infoResult(node: string | undefined): Element {
  return new Element('query', { xmlns: NS.DISCO_INFO, ...(node ? { node } : {}) });
}

function addFeatures(query: Element, extra: readonly string[]): void {
  for (const feature of SERVICE_FEATURES) query.c('feature', { var: feature });
  for (const feature of extra) query.c('feature', { var: `${NS.PUBSUB}#${feature}` });
}

export function discoRoutes({ service, jid, name, extraFeatures = () => [] }: DiscoOptions): Map<string, IqHandler> {
  const info: IqHandler = async (req) => {
    const node = (req.child.attrs.node as string | undefined) || undefined;
    const query = infoResult(node);
    if (!node) {
      query.c('identity', { category: 'pubsub', type: 'service', name });
      addFeatures(query, extraFeatures());
      return query;
    }
    const command = commandInfo(node);
    if (command) return command;
    const meta = await service.metadata(node); // item-not-found for an unknown node
    const { config, creator, created } = meta.record;
    query.c('identity', { category: 'pubsub', type: 'leaf', ...(config.title ? { name: config.title } : {}) });
    addFeatures(query, extraFeatures());
    query.cnode(
      buildForm('result', NS.PUBSUB_META_DATA, [
        { var: 'pubsub#title', values: [config.title] },
        { var: 'pubsub#description', values: [config.description] },
        { var: 'pubsub#type', values: [config.type] },
        { var: 'pubsub#language', type: 'list-single', values: config.language ? [config.language] : [] },
        { var: 'pubsub#contact', type: 'jid-multi', values: config.contact },
        { var: 'pubsub#access_model', values: [config.accessModel] },
        { var: 'pubsub#publish_model', values: [config.publishModel] },
        { var: 'pubsub#max_items', values: [String(config.maxItems)] },
        { var: 'pubsub#creator', type: 'jid-single', values: [creator] },
        { var: 'pubsub#creation_date', values: [new Date(created).toISOString()] },
        { var: 'pubsub#owner', type: 'jid-multi', values: meta.owners },
        { var: 'pubsub#publisher', type: 'jid-multi', values: meta.publishers },
        { var: 'pubsub#num_subscribers', values: [String(meta.subscriberCount)] },
      ]),
    );
    return query;
  };

  // Both listings are paged (XEP-0059): at most PAGE_LIMIT entries, with a <set/> when asked
  // for or when the answer is truncated.
  const items: IqHandler = async (req) => {
    const node = (req.child.attrs.node as string | undefined) || undefined;
    const query = new Element('query', { xmlns: NS.DISCO_ITEMS, ...(node ? { node } : {}) });
    const rsm = parseRsm(req.child, PAGE_LIMIT);
    if (!node) {
      const page = await service.pageNodes(rsm ?? { max: PAGE_LIMIT });
      for (const record of page.entries) {
        query.c('item', { jid, node: record.id, ...(record.config.title ? { name: record.config.title } : {}) });
      }
      if (rsm || page.count > page.entries.length) query.cnode(rsmResult(page, page.entries.map((r) => r.id)));
      return query;
    }
    if (node === NS.COMMANDS) {
      for (const item of commandItems(jid)) query.cnode(item);
      return query;
    }
    // §5.5: the items of a node, as far as the requester may retrieve them: ids only.
    const page = await service.pageItemIds(req.from, node, rsm ?? { max: PAGE_LIMIT });
    for (const id of page.entries) query.c('item', { jid, name: id });
    if (rsm || page.count > page.entries.length) query.cnode(rsmResult(page, page.entries));
    return query;
  };

  return new Map([
    [routeKey('get', NS.DISCO_INFO, 'query'), info],
    [routeKey('get', NS.DISCO_ITEMS, 'query'), items],
  ]);
}
