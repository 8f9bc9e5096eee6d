// Service events -> XEP-0060 event notifications. The <event/> body is serialized once per
// event and spliced into one <message/> per recipient: fan-out costs one string concatenation
// per subscriber, not one tree.

import { Element, escapeXML } from 'ltx';
import type { Recipient, ServiceEvent } from '../pubsub/types.ts';
import { NS } from './ns.ts';
import { itemElement } from './pubsub-handlers.ts';

export function eventElement(event: ServiceEvent): Element {
  const ev = new Element('event', { xmlns: NS.PUBSUB_EVENT });
  switch (event.kind) {
    case 'items':
      ev.c('items', { node: event.node }).cnode(itemElement(event.item, event.withPayload));
      break;
    case 'retract': {
      const items = ev.c('items', { node: event.node });
      for (const id of event.itemIds) items.c('retract', { id });
      break;
    }
    case 'purge':
      ev.c('purge', { node: event.node });
      break;
    case 'delete':
      ev.c('delete', { node: event.node });
      break;
    case 'config':
      ev.c('configuration', { node: event.node });
      break;
    case 'subscription': {
      const { subscription: s } = event;
      ev.c('subscription', { node: s.node, jid: s.jid, subscription: s.state, ...(s.state !== 'none' ? { subid: s.subid } : {}) });
      break;
    }
  }
  return ev;
}

/** Builds message strings for one event; `next()` gives the stanza for each recipient. */
export class NotificationRenderer {
  private counter = 0;
  private readonly prefix: string;

  constructor(
    from: string,
    private readonly messageType: 'headline' | 'normal' = 'headline',
  ) {
    this.prefix = `<message from="${escapeXML(from)}" type="${messageType}" id="`;
  }

  render(event: ServiceEvent, recipients: Recipient[]): string[] {
    const body = eventElement(event).toString();
    const out = new Array<string>(recipients.length);
    for (let i = 0; i < recipients.length; i++) {
      const r = recipients[i] as Recipient;
      out[i] = `${this.prefix}n${(this.counter++).toString(36)}" to="${escapeXML(r.jid)}">${body}</message>`;
    }
    return out;
  }
}
