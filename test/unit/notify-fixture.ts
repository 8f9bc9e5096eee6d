// Shared by the notification tests (digests, one copy, packed payloads): a socket that records
// what the outbox writes, and a submitted pubsub#subscribe_options form.

import { Element, parse } from 'ltx';
import type { OutboxSocket } from '../../src/component/outbox.ts';
import { NS } from '../../src/xmpp/ns.ts';

/** An OutboxSocket that keeps everything written to it. */
export class RecordingSocket implements OutboxSocket {
  written = '';
  write(chunk: string): boolean {
    this.written += chunk;
    return true;
  }
  once(): unknown {
    return this;
  }
  removeListener(): unknown {
    return this;
  }
  /** The messages written to `jid`, parsed, in order. */
  messageElements(jid: string): Element[] {
    return (parse(`<r>${this.written}</r>`) as Element).getChildren('message').filter((m) => m.attrs.to === jid);
  }
}

/** A submitted pubsub#subscribe_options form (XEP-0060 §6.3.5) with these fields. */
export function submittedOptions(fields: Record<string, string>): Element {
  const x = new Element('x', { xmlns: NS.DATA_FORMS, type: 'submit' });
  x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS.PUBSUB_SUBSCRIBE_OPTIONS);
  for (const [name, value] of Object.entries(fields)) x.c('field', { var: name }).c('value').t(value);
  return x;
}
