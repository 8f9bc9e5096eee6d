// XEP-0050 ad-hoc commands the service offers; so far the one XEP-0060 §8.7 defines:
// get-pending, with which owners list the nodes with pending subscription requests and have
// the approval forms (§8.6) sent again for one of them. Stateless: the second step names the
// node, so the session id only echoes.

import { randomUUID } from 'node:crypto';
import { Element } from 'ltx';
import type { PubsubService } from '../pubsub/service.ts';
import { badRequest, StanzaError } from './errors.ts';
import { buildForm, findForm, parseForm } from './forms.ts';
import { NS } from './ns.ts';
import { routeKey, type IqHandler } from './request.ts';

export const GET_PENDING = 'http://jabber.org/protocol/pubsub#get-pending';

/** The commands listed by disco#items on the commands node. */
export function commandItems(jid: string): Element[] {
  return [new Element('item', { jid, node: GET_PENDING, name: 'Get pending subscription requests' })];
}

/** disco#info of a command node, or undefined for other nodes. */
export function commandInfo(node: string): Element | undefined {
  if (node !== GET_PENDING) return undefined;
  const query = new Element('query', { xmlns: NS.DISCO_INFO, node });
  query.c('identity', { category: 'automation', type: 'command-node', name: 'Get pending subscription requests' });
  query.c('feature', { var: NS.COMMANDS });
  query.c('feature', { var: NS.DATA_FORMS });
  return query;
}

export function commandRoutes(service: PubsubService): Map<string, IqHandler> {
  const execute: IqHandler = async (req) => {
    const command = req.child;
    const node = command.attrs.node as string | undefined;
    if (node !== GET_PENDING) throw new StanzaError({ type: 'cancel', condition: 'item-not-found' }, `no command '${node ?? ''}'`);
    const sessionid = (command.attrs.sessionid as string | undefined) || `pubsub-get-pending:${randomUUID()}`;
    const reply = (status: string): Element => new Element('command', { xmlns: NS.COMMANDS, node, sessionid, status });
    const action = (command.attrs.action as string | undefined) ?? 'execute';
    if (action === 'cancel') return reply('canceled');
    const x = findForm(command);
    if (x) {
      // Step 2: the owner picked a node; send the approval forms for its pending requests.
      const form = parseForm(x);
      if (form.type === 'cancel') return reply('canceled');
      const chosen = form.fields.get('pubsub#node')?.[0];
      if (!chosen) throw badRequest('get-pending needs a pubsub#node');
      await service.resendApprovals(req.from, chosen);
      return reply('completed');
    }
    // Step 1: the nodes with pending requests that the requester may approve.
    const owned = (await service.affiliationsOf(req.from)).filter((a) => a.affiliation === 'owner');
    if (owned.length === 0) throw new StanzaError({ type: 'auth', condition: 'forbidden' }, 'you own no node');
    const nodes = [...new Set((await service.pendingOf(req.from)).map((s) => s.node))].sort();
    const el = reply('executing');
    el.c('actions', { execute: 'complete' }).c('complete');
    el.cnode(
      buildForm('form', NS.PUBSUB_SUBSCRIBE_AUTHORIZATION, [
        { var: 'pubsub#node', type: 'list-single', label: 'Node with pending subscription requests', values: [], options: nodes.map((value) => ({ value })) },
      ]),
    );
    return el;
  };
  return new Map([[routeKey('set', NS.COMMANDS, 'command'), execute]]);
}
