// The test client: requests written as XML text so tests read like the XEP's examples. Over a
// real c2s stream (@xmpp/client) to the test servers, or over the in-process wire harness
// (test/wire/harness.ts) — the same client, so the same test runs on both.

import { client } from '@xmpp/client';
import { Element, parse } from 'ltx';
import type { ServerInfo, XmppEnv } from '../../src/devenv/index.ts';
import { bareJid } from '../../src/util/bare-jid.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';

export { eventually } from '../../src/devenv/index.ts';
export { IqError };

let counter = 0;
/** Password of every test user. */
export const PASSWORD = 'secret-pw';

/** How a TestClient reaches a server: a real c2s stream or the in-process harness. */
export interface ClientTransport {
  send(stanza: Element): Promise<unknown>;
  stop(): Promise<unknown>;
  onStanza(listener: (stanza: Element) => void): void;
}

export class TestClient {
  readonly messages: Element[] = [];
  /** Presence stanzas received (e.g. a service answering a presence subscription). */
  readonly presences: Element[] = [];
  private readonly waiters = new Set<{ match: (m: Element) => boolean; resolve: (m: Element) => void }>();
  private readonly pending = new Map<string, { resolve: (e: Element) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly transport: ClientTransport,
    /** The full JID the client is bound to. */
    readonly jid: string,
    /** The @xmpp/client stream of a real c2s connection (for tests that write malformed XML to it). */
    readonly xmpp?: ReturnType<typeof client>,
  ) {
    transport.onStanza((stanza) => this.onStanza(stanza));
  }

  get bare(): string {
    return bareJid(this.jid);
  }

  static async connect(server: ServerInfo, username: string, password: string, resource = 'test'): Promise<TestClient> {
    const xmpp = client({ service: server.c2s, domain: server.domain, username, password, resource });
    xmpp.on('error', () => {});
    xmpp.reconnect.stop();
    const address = await withTimeout(xmpp.start() as Promise<{ toString(): string }>, 15_000, `login ${username}@${server.domain}`);
    const transport: ClientTransport = {
      send: (stanza) => xmpp.send(stanza as never),
      stop: () => xmpp.stop() as Promise<unknown>,
      onStanza: (listener) => xmpp.on('stanza', listener),
    };
    const c = new TestClient(transport, address.toString(), xmpp);
    await xmpp.send(parse('<presence/>') as never);
    return c;
  }

  /** Registers (on the real server) and logs in. */
  static async create(env: XmppEnv, server: ServerInfo, username: string, resource?: string): Promise<TestClient> {
    await env.register(server, username, PASSWORD);
    return TestClient.connect(server, username, PASSWORD, resource);
  }

  private onStanza(stanza: Element): void {
    if (stanza.name === 'iq' && (stanza.attrs.type === 'result' || stanza.attrs.type === 'error')) {
      const waiter = this.pending.get(stanza.attrs.id as string);
      if (!waiter) return;
      this.pending.delete(stanza.attrs.id as string);
      if (stanza.attrs.type === 'result') waiter.resolve(stanza);
      else waiter.reject(IqError.of(stanza));
      return;
    }
    if (stanza.name === 'presence') this.presences.push(stanza);
    if (stanza.name !== 'message') return;
    this.messages.push(stanza);
    for (const w of this.waiters) {
      if (w.match(stanza)) {
        this.waiters.delete(w);
        w.resolve(stanza);
      }
    }
  }

  /** Sends an IQ with the given XML child; resolves to the result <iq/>, rejects with IqError. */
  iq(type: 'get' | 'set', to: string, childXml: string, timeoutMs = 10_000): Promise<Element> {
    const id = `t${++counter}`;
    const iq = new Element('iq', { type, to, id });
    iq.cnode(parse(childXml));
    const reply = new Promise<Element>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    // A write that fails (the server closed the stream) fails this request, not the whole test file.
    this.transport.send(iq).catch((err: unknown) => this.pending.get(id)?.reject(err instanceof Error ? err : new Error(String(err))));
    return withTimeout(reply, timeoutMs, `reply to ${childXml.slice(0, 80)}`).finally(() => this.pending.delete(id));
  }

  /** Like iq(), but `childrenXml` may hold any number of elements (for malformed requests). */
  iqRaw(type: 'get' | 'set', to: string, childrenXml: string, timeoutMs = 10_000): Promise<Element> {
    const id = `t${++counter}`;
    const iq = new Element('iq', { type, to, id });
    for (const child of parse(`<wrap>${childrenXml}</wrap>`).getChildElements()) iq.cnode(child);
    const reply = new Promise<Element>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    // A write that fails (the server closed the stream) fails this request, not the whole test file.
    this.transport.send(iq).catch((err: unknown) => this.pending.get(id)?.reject(err instanceof Error ? err : new Error(String(err))));
    return withTimeout(reply, timeoutMs, `reply to ${childrenXml.slice(0, 80)}`).finally(() => this.pending.delete(id));
  }

  /** Sends a stanza written as XML text (e.g. a <message/>). */
  async send(xml: string): Promise<void> {
    await this.transport.send(parse(xml));
  }

  /** Resolves with the first message (already received or future) that matches. */
  waitForMessage(match: (m: Element) => boolean, timeoutMs = 10_000, what = 'message'): Promise<Element> {
    const seen = this.messages.find(match);
    if (seen) return Promise.resolve(seen);
    let entry: { match: (m: Element) => boolean; resolve: (m: Element) => void } | undefined;
    const p = new Promise<Element>((resolve) => {
      entry = { match, resolve };
      this.waiters.add(entry);
    });
    return withTimeout(p, timeoutMs, `${what} at ${this.jid}`).finally(() => entry && this.waiters.delete(entry));
  }

  /** Messages that match, received so far. */
  received(match: (m: Element) => boolean): Element[] {
    return this.messages.filter(match);
  }

  async stop(): Promise<void> {
    try {
      await withTimeout(this.transport.stop(), 5_000, 'client stop');
    } catch {
      /* the server may already be gone */
    }
  }
}

export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts that a request fails with the given condition (and app condition, if given). */
export async function expectIqError(promise: Promise<unknown>, condition: string, appCondition?: string): Promise<IqError> {
  try {
    await promise;
  } catch (err) {
    if (!(err instanceof IqError)) throw err;
    if (err.condition !== condition || (appCondition !== undefined && err.appCondition !== appCondition)) {
      throw new Error(`expected ${condition}${appCondition ? `+${appCondition}` : ''}, got ${err.message}`);
    }
    return err;
  }
  throw new Error(`expected error ${condition}, got a result`);
}

/** pubsub#event helpers */
export const EVENT = 'http://jabber.org/protocol/pubsub#event';
export const PUBSUB = 'http://jabber.org/protocol/pubsub';
export const OWNER = 'http://jabber.org/protocol/pubsub#owner';

export function eventOf(m: Element): Element | undefined {
  return m.getChild('event', EVENT);
}

export const isItemEvent =
  (node: string, itemId?: string) =>
  (m: Element): boolean => {
    const items = eventOf(m)?.getChild('items');
    if (!items || items.attrs.node !== node) return false;
    return itemId === undefined || items.getChildren('item').some((i) => i.attrs.id === itemId);
  };
