// XEP-0060 §8.6 subscription approval on the wire: the pubsub#subscribe_authorization form the
// service sends to owners, and the handler of owners' answers (a <message/> carrying the
// submitted form). What an answer does is the core's job (PubsubService.authorize).

import { Element } from 'ltx';
import type { PubsubService } from '../pubsub/service.ts';
import type { Subscription } from '../pubsub/types.ts';
import { describeError, errorElement } from './errors.ts';
import { buildForm, parseBoolean, parseForm } from './forms.ts';
import { normalizeJid } from './jid.ts';
import { NS } from './ns.ts';

export function approvalForm(sub: Subscription): Element {
  return buildForm(
    'form',
    NS.PUBSUB_SUBSCRIBE_AUTHORIZATION,
    [
      { var: 'pubsub#subid', type: 'hidden', values: [sub.subid] },
      { var: 'pubsub#node', type: 'text-single', label: 'Node ID', values: [sub.node] },
      { var: 'pubsub#subscriber_jid', type: 'jid-single', label: 'Subscriber Address', values: [sub.jid] },
      { var: 'pubsub#allow', type: 'boolean', label: 'Allow this JID to subscribe to this pubsub node?', values: ['false'] },
    ],
    'PubSub subscriber request',
  );
}

export interface ApprovalLog {
  debug(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Handles a message that may carry an owner's answer to an approval form. Resolves to an error
 * message to send back when the answer cannot be applied; other messages are ignored.
 */
export function approvalAnswerHandler(service: PubsubService, log: ApprovalLog): (stanza: Element) => Promise<Element | undefined> {
  return async (stanza) => {
    const x = stanza.getChildren('x', NS.DATA_FORMS).find((f) => f.getChildren('field').some((fl) => fl.attrs.var === 'FORM_TYPE' && fl.getChildText('value') === NS.PUBSUB_SUBSCRIBE_AUTHORIZATION));
    const from = normalizeJid((stanza.attrs.from as string | undefined) ?? '');
    if (!x || !from) return undefined;
    try {
      const form = parseForm(x);
      if (form.type === 'cancel') return undefined; // §8.6: the request stays pending
      const field = (name: string): string => form.fields.get(name)?.[0] ?? '';
      const jid = normalizeJid(field('pubsub#subscriber_jid')) ?? field('pubsub#subscriber_jid');
      const allow = parseBoolean('pubsub#allow', form.fields.get('pubsub#allow')?.[0]);
      await service.authorize(from, field('pubsub#node') || undefined, field('pubsub#subid'), jid, allow);
      return undefined;
    } catch (err) {
      const described = describeError(err);
      if (!described) throw err;
      log.debug('approval answer refused', { from, condition: described.spec.condition, text: described.text });
      const reply = new Element('message', { type: 'error', to: stanza.attrs.from, from: stanza.attrs.to, ...(stanza.attrs.id ? { id: stanza.attrs.id } : {}) });
      return reply.cnode(errorElement(described.spec, described.text)).up();
    }
  };
}
