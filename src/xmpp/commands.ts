// XEP-0050 ad-hoc commands the service offers; so far the one XEP-0060 §8.7 defines:
// get-pending, with which owners list the nodes with pending subscription requests and have
// the approval forms (§8.6) sent again for one of them. The first step opens a session whose id
// carries its end (SESSION_MS later) and an HMAC, under the component secret, of it and the full
// JID that asked: any member of a cluster (which shares the secret) can check it without shared
// state, as the second step may reach another member. A wrong id, or another JID's, is
// bad-sessionid; a lapsed one session-expired. (Stateless: a completed session may be completed
// again until it lapses, which sends the forms again — harmless.) Actions other than execute,
// complete and cancel are bad-action (only complete is offered), unknown ones malformed-action, a
// second step without its form, or a form without the node, bad-payload (§4.4, "Possible
// Errors"). A service admin owns every node: it may name any node in the second step (a text
// field), the list offering the nodes it owns itself.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Element } from 'ltx';
import type { PubsubService } from '../pubsub/service.ts';
import { StanzaError } from './errors.ts';
import { buildForm, findForm, parseForm } from './forms.ts';
import { NS } from './ns.ts';
import { routeKey, type IqHandler } from './request.ts';

export const GET_PENDING = 'http://jabber.org/protocol/pubsub#get-pending';

/** The commands listed by disco#items on the commands node. */
export function commandItems(jid: string): Element[] {
  return [new Element('item', { jid, node: GET_PENDING, name: 'Get pending subscription requests' })];
}

/** The node names XEP-0050 takes on this JID (the command list and each command): no pub/sub node may have them (§4.2: unique). */
export const COMMAND_NODES: ReadonlySet<string> = new Set([NS.COMMANDS, GET_PENDING]);

/** disco#info of the command list or a command node, or undefined for other nodes. */
export function commandInfo(node: string): Element | undefined {
  if (node === NS.COMMANDS) {
    // XEP-0050 §2.2: the command list node.
    const query = new Element('query', { xmlns: NS.DISCO_INFO, node });
    query.c('identity', { category: 'automation', type: 'command-list', name: 'Commands' });
    query.c('feature', { var: NS.COMMANDS });
    return query;
  }
  if (node !== GET_PENDING) return undefined;
  const query = new Element('query', { xmlns: NS.DISCO_INFO, node });
  query.c('identity', { category: 'automation', type: 'command-node', name: 'Get pending subscription requests' });
  query.c('feature', { var: NS.COMMANDS });
  query.c('feature', { var: NS.DATA_FORMS });
  return query;
}

/** How long a command session stays open (ms). */
export const SESSION_MS = 10 * 60_000;

const ACTIONS = new Set(['execute', 'complete', 'cancel', 'next', 'prev']);
const commandError = (type: 'modify' | 'cancel', condition: string, commands: string, text: string): StanzaError => new StanzaError({ type, condition, commands }, text);
const SESSION = /^pubsub-get-pending:([0-9a-z]{1,12}):([A-Za-z0-9_-]{22})$/;

/**
 * The XEP-0050 routes; `secret` (the component secret, shared by a cluster's members) signs the
 * session ids. `now`: the clock (ms; tests).
 */
export function commandRoutes(service: PubsubService, secret: string, now: () => number = Date.now): Map<string, IqHandler> {
  const sign = (jid: string, until: number): string => createHmac('sha256', secret).update(`get-pending\n${jid}\n${until}`).digest('base64url').slice(0, 22);
  const execute: IqHandler = async (req) => {
    const command = req.child;
    const node = command.attrs.node as string | undefined;
    if (node !== GET_PENDING) throw new StanzaError({ type: 'cancel', condition: 'item-not-found' }, `no command '${node ?? ''}'`);
    const action = (command.attrs.action as string | undefined) ?? 'execute';
    if (!ACTIONS.has(action)) throw commandError('modify', 'bad-request', 'malformed-action', `'${action}' is no XEP-0050 action`);
    const asked = (command.attrs.sessionid as string | undefined) || undefined;
    if (asked !== undefined) {
      const [, end, mac] = SESSION.exec(asked) ?? [];
      const until = Number.parseInt(end ?? '', 36);
      const expected = Buffer.from(Number.isFinite(until) ? sign(req.from, until) : '');
      if (!mac || expected.length !== mac.length || !timingSafeEqual(expected, Buffer.from(mac))) throw commandError('modify', 'bad-request', 'bad-sessionid', `no session '${asked}' of yours`);
      if (until < now()) throw commandError('cancel', 'not-allowed', 'session-expired', `session '${asked}' has expired: execute the command again`);
    }
    if (action === 'next' || action === 'prev') throw commandError('modify', 'bad-request', 'bad-action', `get-pending offers '${action}' at no step: complete or cancel`);
    const ended = (status: 'completed' | 'canceled'): Element => new Element('command', { xmlns: NS.COMMANDS, node, ...(asked !== undefined ? { sessionid: asked } : {}), status });
    if (action === 'cancel') return ended('canceled');
    const x = findForm(command);
    if (asked !== undefined) {
      // Step 2: the owner picked a node; send the approval forms for its pending requests. A
      // form of type cancel counts as submitted (XEP-0050 §4.6.1).
      const chosen = x ? parseForm(x).fields.get('pubsub#node')?.[0] : undefined;
      if (!chosen) throw commandError('modify', 'bad-request', 'bad-payload', 'get-pending completes with its form naming a node (pubsub#node)');
      await service.resendApprovals(req.from, chosen);
      return ended('completed');
    }
    if (action === 'complete') throw commandError('modify', 'bad-request', 'bad-action', 'get-pending starts with execute');
    // Step 1: the nodes with pending requests that the requester may approve.
    const admin = service.isAdmin(req.from);
    const owned = (await service.affiliationsOf(req.from)).filter((a) => a.affiliation === 'owner');
    if (owned.length === 0 && !admin) throw new StanzaError({ type: 'auth', condition: 'forbidden' }, 'you own no node');
    const nodes = [...new Set((await service.pendingOf(req.from)).map((s) => s.node))].sort();
    const until = now() + SESSION_MS;
    const sessionid = `pubsub-get-pending:${until.toString(36)}:${sign(req.from, until)}`;
    const el = new Element('command', { xmlns: NS.COMMANDS, node, sessionid, status: 'executing' });
    el.c('actions', { execute: 'complete' }).c('complete');
    el.cnode(
      buildForm('form', NS.PUBSUB_SUBSCRIBE_AUTHORIZATION, [
        admin
          ? { var: 'pubsub#node', type: 'text-single', label: `Node with pending subscription requests (yours: ${nodes.join(', ') || 'none'}; as an admin, any)`, values: [] }
          : { var: 'pubsub#node', type: 'list-single', label: 'Node with pending subscription requests', values: [], options: nodes.map((value) => ({ value })) },
      ]),
    );
    return el;
  };
  return new Map([[routeKey('set', NS.COMMANDS, 'command'), execute]]);
}
