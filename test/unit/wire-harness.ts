// A pub/sub service behind the real router and handlers, with notifications rendered to the
// stanzas the component would send: wire-level unit tests read requests and replies as XML.

import { parse, type Element } from 'ltx';
import { silentLogger } from '../../src/log.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { discoRoutes } from '../../src/xmpp/disco.ts';
import { NotificationRenderer } from '../../src/xmpp/notifications.ts';
import { pubsubRoutes } from '../../src/xmpp/pubsub-handlers.ts';
import { Router } from '../../src/xmpp/router.ts';

export const SVC = 'pubsub.a.example';
export const PUBSUB = 'http://jabber.org/protocol/pubsub';
export const OWNER_NS = 'http://jabber.org/protocol/pubsub#owner';
export const EVENT = 'http://jabber.org/protocol/pubsub#event';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const ERRORS = 'http://jabber.org/protocol/pubsub#errors';

export interface WireError {
  type: string;
  condition: string | undefined;
  pubsub: string | undefined;
  text: string | undefined;
}

export class Wire {
  /** Every notification sent, parsed, in order. */
  readonly messages: Element[] = [];
  readonly service: PubsubService;
  private readonly router: Router;
  private n = 0;

  constructor() {
    const renderer = new NotificationRenderer(SVC);
    this.service = new PubsubService({
      store: new MemoryStore(),
      mayCreateNodes: () => true,
      notifier: (event, recipients) => {
        for (const stanza of renderer.render(event, recipients)) this.messages.push(parse(stanza) as Element);
      },
    });
    this.router = new Router({ jid: SVC, routes: new Map([...pubsubRoutes(this.service), ...discoRoutes({ service: this.service, jid: SVC, name: 'test' })]), log: silentLogger });
  }

  /** Sends an iq; resolves to the reply (result or error). */
  async send(from: string, type: 'get' | 'set', child: string): Promise<Element> {
    const reply = await this.router.handle(parse(`<iq type='${type}' id='w${++this.n}' from='${from}' to='${SVC}'>${child}</iq>`) as Element);
    if (!reply) throw new Error('no reply');
    return reply;
  }

  /** Sends an iq that must succeed; resolves to the result. */
  async ok(from: string, type: 'get' | 'set', child: string): Promise<Element> {
    const reply = await this.send(from, type, child);
    if (reply.attrs.type !== 'result') throw new Error(`expected a result for ${child}, got ${reply.toString()}`);
    return reply;
  }

  /** Sends an iq that must fail; resolves to its error. */
  async error(from: string, type: 'get' | 'set', child: string): Promise<WireError> {
    const reply = await this.send(from, type, child);
    const error = reply.getChild('error');
    if (reply.attrs.type !== 'error' || !error) throw new Error(`expected an error for ${child}, got ${reply.toString()}`);
    const children = error.getChildElements();
    return {
      type: error.attrs.type as string,
      condition: children.find((c) => c.getNS() === STANZAS && c.name !== 'text')?.name,
      pubsub: children.find((c) => c.getNS() === ERRORS)?.name,
      text: error.getChildText('text', STANZAS) ?? undefined,
    };
  }

  /** The notifications sent to `jid`'s bare JID since `from` (an index into messages). */
  to(jid: string, from = 0): Element[] {
    const bare = jid.split('/')[0];
    return this.messages.slice(from).filter((m) => (m.attrs.to as string).split('/')[0] === bare);
  }
}

/** The values of a data form's fields, by var. */
export function fieldsOf(x: Element | undefined): Map<string, string[]> {
  return new Map((x?.getChildren('field') ?? []).map((f) => [f.attrs.var as string, f.getChildren('value').map((v) => v.getText())]));
}

export const eventOf = (m: Element | undefined): Element | undefined => m?.getChild('event', EVENT);
