// Service events -> XEP-0060 event notifications. The <event/> body is serialized once per
// event and spliced into one <message/> per recipient: fan-out costs one string concatenation
// per subscriber, not one tree.

import { Element, escapeXML } from 'ltx';
import { DEFAULT_NODE_CONFIG } from '../pubsub/node-config.ts';
import type { Recipient, ServiceEvent } from '../pubsub/types.ts';
import { NS } from './ns.ts';
import { approvalForm } from './approval.ts';
import { configForm } from './node-config-form.ts';
import { packable } from './packed.ts';
import { itemElement } from './pubsub-handlers.ts';

/**
 * The <event/> of a notification, as XEP-0060 shows each kind: items (with the payload only
 * when the node delivers payloads, §7.1.2.1-2; empty on a transient notification-only node,
 * §4.3), retract (§7.2.2.1), purge (§8.5.2), delete with its redirect (§8.4.2), configuration
 * (with the new configuration as a result form when the node delivers payloads, §8.2.5.3),
 * subscription (§8.8.4, §12.14) and a digest (pubsub#digest: several items and retractions in
 * one <items/>). `packed`: item payloads as Hermod's packed option has them (src/xmpp/packed.ts).
 */
export function eventElement(event: ServiceEvent, packed = false): Element {
  const ev = new Element('event', { xmlns: NS.PUBSUB_EVENT });
  switch (event.kind) {
    case 'items': {
      const items = ev.c('items', { node: event.node });
      if (event.item) items.cnode(itemElement(event.item, event.withPayload, packed));
      break;
    }
    case 'retract': {
      const items = ev.c('items', { node: event.node });
      for (const id of event.itemIds) items.c('retract', { id });
      break;
    }
    case 'digest': {
      // pubsub#digest: the aggregated publications and retractions, in publish order.
      const items = ev.c('items', { node: event.node });
      for (const part of event.events) {
        if ('retract' in part) for (const id of part.retract) items.c('retract', { id });
        else items.cnode(itemElement(part.item, part.withPayload, packed));
      }
      break;
    }
    case 'purge':
      ev.c('purge', { node: event.node });
      break;
    case 'delete': {
      const deleted = ev.c('delete', { node: event.node });
      if (event.redirect) deleted.c('redirect', { uri: event.redirect });
      break;
    }
    case 'config': {
      const configuration = ev.c('configuration', { node: event.node });
      // Defaults under it: an event replayed from the journal may predate a configuration field.
      if (event.config) configuration.cnode(configForm({ ...DEFAULT_NODE_CONFIG, ...event.config }, 'result'));
      break;
    }
    case 'authorization': // rendered as a form, not an event (see render)
    case 'affiliation': // rendered as <pubsub><affiliations/></pubsub>, not an event (see render)
      break;
    case 'subscription': {
      const { subscription: s } = event;
      ev.c('subscription', { node: s.node, jid: s.jid, subscription: s.state, ...(s.state !== 'none' ? { subid: s.subid } : {}) });
      break;
    }
  }
  return ev;
}

/**
 * §8.9.4: the notification an entity gets when an owner changes its affiliation —
 * `<pubsub xmlns='…/pubsub'><affiliations node='…'><affiliation jid='…' affiliation='…'/></affiliations></pubsub>`.
 */
function affiliationElement(event: { node: string; jid: string; affiliation: string }): Element {
  return new Element('pubsub', { xmlns: NS.PUBSUB }).c('affiliations', { node: event.node }).c('affiliation', { jid: event.jid, affiliation: event.affiliation }).root();
}

/** Whether an event's notification carries an item payload that the packed option packs. */
function carriesPayload(event: ServiceEvent): boolean {
  if (event.kind === 'items') return event.withPayload && event.item !== undefined && packable(event.item);
  if (event.kind === 'digest') return event.events.some((part) => !('retract' in part) && part.withPayload && packable(part.item));
  return false;
}

/** XEP-0131 SubID headers (XEP-0060 §7.1.2.4) for a JID with several subscriptions. */
function subidHeaders(subids: string[]): string {
  return `<headers xmlns="${NS.SHIM}">${subids.map((id) => `<header name="SubID">${escapeXML(id)}</header>`).join('')}</headers>`;
}

/** Builds message strings for one event; `next()` gives the stanza for each recipient. */
export class NotificationRenderer {
  private counter = 0;
  private readonly from: string;

  constructor(
    from: string,
    /** For events that do not name their node's pubsub#notification_type. */
    private readonly messageType: 'headline' | 'normal' = 'headline',
  ) {
    this.from = escapeXML(from);
  }

  render(event: ServiceEvent, recipients: Recipient[]): string[] {
    // §8.6 approval requests are forms in normal messages; everything else is an <event/>.
    const approval = event.kind === 'authorization';
    let trailer = '';
    // XEP-0313 (the archive id on a live message) with XEP-0359 stanza-id: `by` is the archive's JID.
    if (event.archiveId !== undefined) trailer += `<stanza-id xmlns="${NS.SID}" id="${escapeXML(event.archiveId)}" by="${this.from}"/>`;
    // XEP-0203: an item sent after the fact (the last published item) carries its publication time.
    if (event.kind === 'items' && event.delayed && event.item) trailer += `<delay xmlns="${NS.DELAY}" from="${this.from}" stamp="${new Date(event.item.published).toISOString()}"/>`;
    // Recipients that asked for packed payloads get their own body where there is a payload to
    // pack; each body is made once, when a recipient needs it (a digest has one recipient).
    const packs = carriesPayload(event);
    let body: string | undefined;
    let packedBody: string | undefined;
    const bodyFor = (r: Recipient): string => {
      if (r.packed && packs) return (packedBody ??= eventElement(event, true).toString() + trailer);
      return (body ??= (approval ? approvalForm(event.subscription) : event.kind === 'affiliation' ? affiliationElement(event) : eventElement(event)).toString() + trailer);
    };
    // §12.16: SubID headers only where the content differs by subscription (items, retractions).
    const perSubscription = event.kind === 'items' || event.kind === 'retract' || event.kind === 'digest';
    const prefix = `<message from="${this.from}" type="${approval ? 'normal' : (event.messageType ?? this.messageType)}" id="`;
    const out = new Array<string>(recipients.length);
    for (let i = 0; i < recipients.length; i++) {
      const r = recipients[i] as Recipient;
      out[i] = `${prefix}n${(this.counter++).toString(36)}" to="${escapeXML(r.jid)}">${bodyFor(r)}${r.subids && perSubscription ? subidHeaders(r.subids) : ''}</message>`;
    }
    return out;
  }
}
