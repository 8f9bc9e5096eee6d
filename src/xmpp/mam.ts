// XEP-0313 Message Archive Management on pub/sub nodes (XEP-0442): a query with a `node`
// attribute gets one <message/> per archive entry (a forwarded event notification, stamped),
// then the IQ result with <fin/>. Filters: start, end, after-id, before-id, ids; RSM paging.
// The result messages go out through `send`, which resolves once they are on the wire, so the
// <fin/> that the router sends afterwards arrives last.

import { Element, escapeXML } from 'ltx';
import { ARCHIVE_PAGE_LIMIT, type PubsubService } from '../pubsub/service.ts';
import type { ArchiveEntry } from '../pubsub/types.ts';
import type { ArchiveQuery } from '../store/store.ts';
import { badRequest, StanzaError } from './errors.ts';
import { buildForm, findForm, parseForm } from './forms.ts';
import { NS } from './ns.ts';
import { eventElement } from './notifications.ts';
import { routeKey, type IqHandler } from './request.ts';
import { fitPage, parseRsm, rsmResult } from './rsm.ts';

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function time(name: string, value: string | undefined): number {
  const ms = value !== undefined && DATE_TIME.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) throw badRequest(`${name} must be an XEP-0082 DateTime such as 2030-01-01T00:00:00Z (got '${value ?? ''}')`);
  return ms;
}

/** The filters of a submitted urn:xmpp:mam:2 form. Unknown fields are feature-not-implemented. */
export function parseArchiveQuery(x: Element | undefined): ArchiveQuery {
  if (!x) return {};
  const form = parseForm(x);
  if (form.formType !== undefined && form.formType !== NS.MAM) throw badRequest(`FORM_TYPE must be ${NS.MAM}`);
  const query: ArchiveQuery = {};
  for (const [name, values] of form.fields) {
    const value = values[0];
    if (name === 'start') query.start = time(name, value);
    else if (name === 'end') query.end = time(name, value);
    else if (name === 'after-id' && value) query.afterId = value;
    else if (name === 'before-id' && value) query.beforeId = value;
    else if (name === 'ids') query.ids = values;
    else throw new StanzaError({ type: 'cancel', condition: 'feature-not-implemented' }, `MAM filter ${name} is not supported on pub/sub nodes`);
  }
  return query;
}

/** The event notification an archive entry stands for. */
function entryEvent(node: string, entry: ArchiveEntry): Element {
  if (entry.item) return eventElement({ kind: 'items', node, item: entry.item, withPayload: true });
  if (entry.purged) return eventElement({ kind: 'purge', node });
  return eventElement({ kind: 'retract', node, itemIds: entry.retracted ?? [] });
}

export function mamRoutes(service: PubsubService, jid: string, send: (stanzas: string[]) => Promise<void>): Map<string, IqHandler> {
  const query: IqHandler = async (req) => {
    const node = (req.child.attrs.node as string | undefined) || undefined;
    if (!node) throw new StanzaError({ type: 'cancel', condition: 'item-not-found' }, 'this service keeps archives of pub/sub nodes only: give a node attribute');
    const filters = parseArchiveQuery(findForm(req.child));
    const rsm = parseRsm(req.child, ARCHIVE_PAGE_LIMIT);
    const backwards = rsm?.before !== undefined;
    const page = fitPage(await service.queryArchive(req.from, node, filters, rsm ?? { max: ARCHIVE_PAGE_LIMIT }), (e) => e.item?.payload.length ?? 64, backwards);
    const queryid = req.child.attrs.queryid as string | undefined;
    const from = escapeXML(jid);
    const to = escapeXML(req.from);
    await send(
      page.entries.map((entry) => {
        const result = new Element('result', { xmlns: NS.MAM, ...(queryid !== undefined ? { queryid } : {}), id: entry.id });
        const forwarded = result.c('forwarded', { xmlns: NS.FORWARD });
        forwarded.c('delay', { xmlns: NS.DELAY, stamp: new Date(entry.stamp).toISOString() });
        forwarded.c('message', { xmlns: 'jabber:client', from: jid, type: 'headline' }).cnode(entryEvent(node, entry));
        return `<message from="${from}" to="${to}" id="mam-${escapeXML(entry.id)}">${result.toString()}</message>`;
      }),
    );
    const complete = page.complete ?? (backwards ? page.entries.length === 0 || page.firstIndex === 0 : page.firstIndex + page.entries.length >= page.count);
    const fin = new Element('fin', { xmlns: NS.MAM, complete: String(complete) });
    fin.cnode(rsmResult(page, page.entries.map((e) => e.id)));
    // How many results this page sent (Hermod's extension; a page cut by bytes has fewer than
    // the RSM count and index imply): a reader whose results may arrive after the <fin/> (a
    // cluster) knows how many to wait for (src/xmpp/pubsub-client.ts history).
    fin.c('page', { xmlns: NS.HERMOD_PUBSUB, results: String(page.entries.length) });
    return fin;
  };

  // §5: the fields a client may use.
  const fields: IqHandler = async () =>
    new Element('query', { xmlns: NS.MAM }).cnode(
      buildForm('form', NS.MAM, [
        { var: 'start', type: 'text-single', values: [] },
        { var: 'end', type: 'text-single', values: [] },
        { var: 'after-id', type: 'text-single', values: [] },
        { var: 'before-id', type: 'text-single', values: [] },
        { var: 'ids', type: 'list-multi', values: [] },
      ]),
    ).up();

  return new Map([
    [routeKey('set', NS.MAM, 'query'), query],
    [routeKey('get', NS.MAM, 'query'), fields],
  ]);
}
