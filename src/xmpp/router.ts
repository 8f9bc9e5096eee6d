// Stanza dispatch: an incoming stanza becomes a typed IqRequest and goes to the handler keyed
// by (iq type, child namespace, child name). Unknown requests get service-unavailable, never
// silence; handler errors become stanza errors through the one error table. Messages go to the
// handler of the namespace of their first child that has one (privilege grants, pub/sub events
// from partners, approval forms). The router only computes replies: sending is the connection's job.

import { Element } from 'ltx';
import { describeError, errorElement, INTERNAL, SERVICE_UNAVAILABLE, type ErrorSpec } from './errors.ts';
import { normalizeJid, parseJid } from './jid.ts';
import { routeKey, type IqHandler } from './request.ts';

export interface RouterLog {
  debug(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface RouterOptions {
  /** The component JID: requests to other local parts are refused. */
  jid: string;
  routes: Map<string, IqHandler>;
  log: RouterLog;
  /** Called with message stanzas of type error (bounces of notifications). */
  onBounce?: (stanza: Element) => void;
  /**
   * Other messages, by the namespace of a child element (the first child whose namespace has a
   * handler wins; a message with none is ignored). A handler may resolve to a reply.
   */
  messages?: ReadonlyMap<string, MessageHandler>;
  /** Called with presence stanzas (src/xmpp/presence.ts); replies are its own to send. */
  onPresence?: (stanza: Element) => void;
  /** Called with iq results and errors (answers to requests the component sent). */
  onIqResponse?: (stanza: Element) => void;
}

/** Handles one message stanza; `payload` is its child that selected the handler. */
export type MessageHandler = (stanza: Element, payload: Element) => Promise<Element | undefined> | Element | undefined | void;

export class Router {
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: RouterOptions) {}

  /** Handles one stanza; resolves to the reply to send, if any. */
  handle(stanza: Element): Promise<Element | undefined> {
    const task = this.dispatch(stanza);
    this.inFlight.add(task);
    void task.finally(() => this.inFlight.delete(task));
    return task;
  }

  /** Stanzas being handled now. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Resolves when every request under way has been answered. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private async message(stanza: Element): Promise<Element | undefined> {
    const routes = this.options.messages;
    if (!routes) return undefined;
    for (const payload of stanza.getChildElements()) {
      const handler = routes.get(payload.getNS() ?? '');
      if (handler) return (await handler(stanza, payload)) ?? undefined;
    }
    return undefined;
  }

  private async dispatch(stanza: Element): Promise<Element | undefined> {
    const { log } = this.options;
    if (stanza.name === 'message') {
      if (stanza.attrs.type === 'error') this.options.onBounce?.(stanza);
      else return this.message(stanza);
      return undefined;
    }
    if (stanza.name === 'presence') {
      this.options.onPresence?.(stanza);
      return undefined;
    }
    if (stanza.name !== 'iq') return undefined;
    const type = stanza.attrs.type as string | undefined;
    if (type === 'result' || type === 'error') {
      this.options.onIqResponse?.(stanza);
      return undefined;
    }
    if (type !== 'get' && type !== 'set') return undefined;
    const fromRaw = stanza.attrs.from as string | undefined;
    const from = fromRaw === undefined ? undefined : normalizeJid(fromRaw);
    if (!from) {
      log.warn('dropping iq with missing or invalid from', { from: fromRaw });
      return undefined;
    }
    const to = (stanza.attrs.to as string | undefined) ?? this.options.jid;
    const reply = (spec: ErrorSpec, text?: string): Element => iqReply(stanza, 'error', errorElement(spec, text));
    const children = stanza.getChildElements();
    const child = children[0];
    if (children.length !== 1 || !child) return reply({ type: 'modify', condition: 'bad-request' }, 'an iq request carries exactly one child element');
    if (parseJid(to)?.local) return reply(SERVICE_UNAVAILABLE);
    const handler = this.options.routes.get(routeKey(type, child.getNS() ?? '', child.name));
    if (!handler) return reply(SERVICE_UNAVAILABLE);
    try {
      const result = await handler({ type, from, to, child });
      return iqReply(stanza, 'result', result);
    } catch (err) {
      const described = describeError(err);
      if (described) {
        log.debug('request refused', { from, request: child.name, condition: described.spec.condition, text: described.text });
        return reply(described.spec, described.text);
      }
      log.error('request failed', { from, request: child.name, err: err instanceof Error ? err.stack : String(err) });
      return reply(INTERNAL);
    }
  }
}

function iqReply(request: Element, type: 'result' | 'error', ...children: Array<Element | undefined>): Element {
  const iq = new Element('iq', { type, id: request.attrs.id, to: request.attrs.from, from: request.attrs.to });
  for (const child of children) if (child) iq.cnode(child);
  return iq;
}
