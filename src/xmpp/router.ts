// Stanza dispatch: an incoming stanza becomes a typed IqRequest and goes to the handler keyed
// by (iq type, child namespace, child name). Unknown requests get service-unavailable, never
// silence; handler errors become stanza errors through the one error table. Messages go to the
// handler of the namespace of their first child that has one (privilege grants, pub/sub events
// from partners, approval forms). The router only computes replies: sending is the connection's job.
// Requests (iq get/set) under way are bounded, in all and per sender's bare JID: one beyond is
// answered at once with resource-constraint (type wait, RFC 6120 §8.3.3.18: try again later)
// instead of queueing behind the others without end (a slow store and a burst of requests, or
// one entity flooding, grew the node queues and memory). Messages, presence and answers to our
// own requests are not refused: they carry notifications and results nobody would send again.

import { Element } from 'ltx';
import { describeError, errorElement, INTERNAL, SERVICE_UNAVAILABLE, type ErrorSpec } from './errors.ts';
import { bareJid } from '../util/bare-jid.ts';
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
  /** Most requests under way at once (default MAX_REQUESTS). */
  maxRequests?: number;
  /** Most requests under way at once from one bare JID (default MAX_REQUESTS_PER_SENDER). */
  maxRequestsPerSender?: number;
}

/** Default bounds of requests under way: in all, and from one sender's bare JID. */
export const MAX_REQUESTS = 4096;
export const MAX_REQUESTS_PER_SENDER = 1024;
const BUSY: ErrorSpec = { type: 'wait', condition: 'resource-constraint' };

/** Handles one message stanza; `payload` is its child that selected the handler. */
export type MessageHandler = (stanza: Element, payload: Element) => Promise<Element | undefined> | Element | undefined | void;

export class Router {
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Requests (iq get/set) under way, in all and by the sender's bare JID. */
  private requests = 0;
  private readonly requestsBySender = new Map<string, number>();
  private refusedBusy = 0;
  /** Set by close(): requests are refused (Hermod stopping). */
  private closed = false;
  /** Refusals since a request was last accepted (one warning per burst, not one per request). */
  private refusedInBurst = 0;

  constructor(private readonly options: RouterOptions) {}

  /** Handles one stanza; resolves to the reply to send, if any. */
  handle(stanza: Element): Promise<Element | undefined> {
    const task = this.dispatch(stanza);
    this.inFlight.add(task);
    // Not task.finally(): its promise would reject with a message handler's error, unhandled.
    const done = (): void => void this.inFlight.delete(task);
    task.then(done, done);
    return task;
  }

  /** Stanzas being handled now. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Requests answered resource-constraint because too many were under way (since start). */
  get refusedBusyCount(): number {
    return this.refusedBusy;
  }

  /**
   * Takes no further requests: from now on an iq get/set is answered `resource-constraint`
   * (type wait: try again later) at once, as when too many are under way; Hermod is stopping.
   * Messages, presence and answers to our own requests are still handled.
   */
  close(): void {
    this.closed = true;
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
    if (this.closed) return reply(BUSY, 'the service is stopping; try again later');
    const sender = bareJid(from);
    const bySender = this.requestsBySender.get(sender) ?? 0;
    if (this.requests >= (this.options.maxRequests ?? MAX_REQUESTS) || bySender >= (this.options.maxRequestsPerSender ?? MAX_REQUESTS_PER_SENDER)) {
      this.refusedBusy++;
      if (this.refusedInBurst++ === 0) log.warn('requests refused: too many under way (resource-constraint)', { from, requests: this.requests, fromSender: bySender });
      return reply(BUSY, 'too many requests under way; try again later');
    }
    if (this.refusedInBurst > 0) log.warn('requests accepted again', { refused: this.refusedInBurst });
    this.refusedInBurst = 0;
    this.requests++;
    this.requestsBySender.set(sender, bySender + 1);
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
    } finally {
      this.requests--;
      const left = (this.requestsBySender.get(sender) ?? 1) - 1;
      if (left > 0) this.requestsBySender.set(sender, left);
      else this.requestsBySender.delete(sender);
    }
  }
}

function iqReply(request: Element, type: 'result' | 'error', ...children: Array<Element | undefined>): Element {
  const iq = new Element('iq', { type, id: request.attrs.id, to: request.attrs.from, from: request.attrs.to });
  for (const child of children) if (child) iq.cnode(child);
  return iq;
}
