// Raw-socket XMPP endpoints for the load generator: a c2s client (SASL PLAIN, bind, session,
// presence; plain TCP as the test servers allow) and an XEP-0114 component connection. Stanzas
// are strings (see xml-stream.ts): the hot path for a receiver is one indexOf per message, so
// thousands of connections in one Node process cost little next to the servers under test.

import { createHash } from 'node:crypto';
import * as net from 'node:net';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { attr, childText, escapeXml, StanzaSplitter } from './xml-stream.ts';

const NS_STREAM = 'http://etherx.jabber.org/streams';
let idCounter = 0;
export const nextId = (prefix = 'b'): string => `${prefix}${(idCounter++).toString(36)}`;

interface Pending {
  resolve(xml: string): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

function parseService(service: string): { host: string; port: number } {
  const u = new URL(service);
  return { host: u.hostname, port: Number(u.port) };
}

/** Shared plumbing: socket, splitter, IQ tracking, awaited one-off stanzas during negotiation. */
abstract class RawStream {
  /** The full JID a client is bound to, or the JID a component serves. */
  jid = '';
  protected socket!: net.Socket;
  protected readonly splitter: StanzaSplitter;
  private readonly pending = new Map<string, Pending>();
  private waiter: { match: (x: string) => boolean; resolve: (x: string) => void; reject: (e: Error) => void } | undefined;
  private openWaiter: ((tag: string) => void) | undefined;
  protected closed = false;
  private closeListeners: Array<(err?: Error) => void> = [];
  /** Called for every <message/> stanza once the stream is up. */
  onMessage: ((xml: string) => void) | undefined;
  /** Called for iq get/set addressed to this entity; the default answers service-unavailable. */
  onIqRequest: ((xml: string) => void) | undefined;
  bytesIn = 0;

  constructor() {
    this.splitter = new StanzaSplitter({
      onOpen: (tag) => {
        const w = this.openWaiter;
        this.openWaiter = undefined;
        w?.(tag);
      },
      onStanza: (xml) => this.dispatch(xml),
      onClose: () => this.socket?.end(),
    });
  }

  /** Connects `stream` to `service`, then runs `negotiate`; if that fails, destroys it and throws Error("`what`: reason"). */
  protected static async open<T extends RawStream>(stream: T, service: string, timeoutMs: number, what: string, negotiate: () => Promise<void>): Promise<T> {
    await stream.connectSocket(service, timeoutMs);
    try {
      await negotiate();
    } catch (err) {
      stream.destroy();
      throw new Error(`${what}: ${(err as Error).message}`);
    }
    return stream;
  }

  protected connectSocket(service: string, timeoutMs: number): Promise<void> {
    const { host, port } = parseService(service);
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      this.socket = socket;
      socket.setNoDelay(true);
      socket.setEncoding('utf8');
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect ${service} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.on('data', (chunk: string) => this.feed(chunk));
      socket.on('error', () => {});
      socket.on('close', () => this.onSocketClose());
    });
  }

  private onSocketClose(): void {
    this.closed = true;
    const err = new Error('connection closed');
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.waiter?.reject(err);
    this.waiter = undefined;
    for (const l of this.closeListeners) l(err);
  }

  /** Incoming stream data (from the socket; the loadgen self-test calls it directly). */
  feed(chunk: string): void {
    this.bytesIn += chunk.length;
    this.splitter.push(chunk);
  }

  onClose(listener: (err?: Error) => void): void {
    this.closeListeners.push(listener);
  }

  protected waitOpen(timeoutMs: number): Promise<string> {
    return withTimeout(new Promise<string>((resolve) => (this.openWaiter = resolve)), timeoutMs, 'stream open');
  }

  protected waitFor(match: (xml: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    let entry: RawStream['waiter'];
    return withTimeout(
      new Promise<string>((resolve, reject) => {
        entry = { match, resolve, reject };
        this.waiter = entry;
      }),
      timeoutMs,
      what,
    ).finally(() => {
      if (this.waiter === entry) this.waiter = undefined;
    });
  }

  private dispatch(xml: string): void {
    const c2 = xml.charCodeAt(1);
    if (c2 === 109 /* m */ && xml.startsWith('<message')) {
      this.onMessage?.(xml);
      return;
    }
    if (c2 === 105 /* i */ && xml.startsWith('<iq')) {
      const type = attr(xml, 'type');
      if (type === 'result' || type === 'error') {
        const id = attr(xml, 'id');
        const p = id === undefined ? undefined : this.pending.get(id);
        if (p) {
          this.pending.delete(id as string);
          clearTimeout(p.timer);
          if (type === 'result') p.resolve(xml);
          else p.reject(IqError.fromXml(xml));
          return;
        }
      } else if (type === 'get' || type === 'set') {
        if (this.onIqRequest) this.onIqRequest(xml);
        else this.replyError(xml);
        return;
      }
    }
    const w = this.waiter;
    if (w && w.match(xml)) {
      this.waiter = undefined;
      w.resolve(xml);
    }
  }

  replyError(request: string): void {
    const id = attr(request, 'id') ?? '';
    const from = attr(request, 'from');
    const to = attr(request, 'to');
    this.write(
      `<iq type='error' id='${escapeXml(id)}'${from ? ` to='${escapeXml(from)}'` : ''}${to ? ` from='${escapeXml(to)}'` : ''}>` +
        `<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
    );
  }

  /** Writes raw XML; returns socket.write's backpressure flag. */
  write(xml: string): boolean {
    if (this.closed) return false;
    return this.socket.write(xml);
  }

  get writableNeedDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  waitDrain(): Promise<void> {
    if (!this.socket.writableNeedDrain || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
  }

  /**
   * Sends an iq (the `id` attribute is added) and resolves to the result stanza text; rejects
   * with IqError on type='error'. `attrs` are written as-is (escaped by the caller).
   */
  iq(type: 'get' | 'set', to: string, child: string, timeoutMs = 15_000): Promise<string> {
    const id = nextId('q');
    const p = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`iq ${type} to ${to} timed out after ${timeoutMs} ms: ${child.slice(0, 120)}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    this.write(`<iq type='${type}' to='${escapeXml(to)}' id='${id}'>${child}</iq>`);
    return p;
  }

  get pendingIqs(): number {
    return this.pending.size;
  }

  async close(timeoutMs = 3000): Promise<void> {
    if (this.closed) return;
    const closed = new Promise<void>((resolve) => this.onClose(() => resolve()));
    try {
      this.socket.write('</stream:stream>');
      this.socket.end();
    } catch {
      /* ignore */
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    if (!this.closed) this.socket.destroy();
  }

  destroy(): void {
    this.socket?.destroy();
  }
}

export interface ClientOptions {
  service: string; // xmpp://ip:port
  domain: string;
  user: string;
  password: string;
  resource: string;
  presence?: boolean;
  timeoutMs?: number;
}

/** A c2s client session. */
export class RawClient extends RawStream {
  static async login(o: ClientOptions): Promise<RawClient> {
    const c = new RawClient();
    const t = o.timeoutMs ?? 15_000;
    return RawStream.open(c, o.service, t, `login ${o.user}@${o.domain}/${o.resource}`, () => c.negotiate(o, t));
  }

  private header(domain: string): string {
    return `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='${NS_STREAM}' to='${domain}' version='1.0'>`;
  }

  private async negotiate(o: ClientOptions, t: number): Promise<void> {
    const isFeatures = (x: string): boolean => x.startsWith('<stream:features');
    let opened = this.waitOpen(t);
    let features = this.waitFor(isFeatures, t, 'stream features');
    this.write(this.header(o.domain));
    await opened;
    const f1 = await features;
    if (!f1.includes('>PLAIN<')) throw new Error(`server does not offer SASL PLAIN: ${f1}`);
    const creds = Buffer.from(`\0${o.user}\0${o.password}`).toString('base64');
    const outcome = this.waitFor((x) => x.startsWith('<success') || x.startsWith('<failure'), t, 'SASL outcome');
    this.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${creds}</auth>`);
    const sasl = await outcome;
    if (!sasl.startsWith('<success')) throw new Error(`SASL failed: ${sasl}`);
    this.splitter.reset();
    opened = this.waitOpen(t);
    features = this.waitFor(isFeatures, t, 'stream features after SASL');
    this.write(this.header(o.domain));
    await opened;
    const f2 = await features;
    const bound = await this.iqRaw(
      'set',
      `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${escapeXml(o.resource)}</resource></bind>`,
      t,
    );
    this.jid = childText(bound, 'jid') ?? `${o.user}@${o.domain}/${o.resource}`;
    if (f2.includes('urn:ietf:params:xml:ns:xmpp-session') && !/<session[^>]*>\s*<optional\/>/.test(f2)) {
      await this.iqRaw('set', `<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>`, t);
    }
    if (o.presence ?? true) this.write('<presence/>');
  }

  /** An iq without a 'to' (to the server itself). */
  private iqRaw(type: 'get' | 'set', child: string, timeoutMs: number): Promise<string> {
    const id = nextId('n');
    const p = this.waitFor((x) => x.startsWith('<iq') && attr(x, 'id') === id, timeoutMs, `reply to ${child.slice(0, 60)}`);
    this.write(`<iq type='${type}' id='${id}'>${child}</iq>`);
    return p.then((x) => {
      if (attr(x, 'type') !== 'result') throw IqError.fromXml(x);
      return x;
    });
  }
}

export interface ComponentOptions {
  service: string;
  jid: string;
  secret: string;
  timeoutMs?: number;
}

/** An XEP-0114 component connection (handshake only; stanzas are the caller's). */
export class RawComponent extends RawStream {
  static async connect(o: ComponentOptions): Promise<RawComponent> {
    const c = new RawComponent();
    const t = o.timeoutMs ?? 15_000;
    c.jid = o.jid;
    return RawStream.open(c, o.service, t, `component ${o.jid}`, async () => {
      const opened = c.waitOpen(t);
      c.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='${NS_STREAM}' to='${o.jid}'>`);
      const tag = await opened;
      const id = attr(tag, 'id');
      if (!id) throw new Error(`no stream id in ${tag}`);
      const hs = c.waitFor((x) => x.startsWith('<handshake') || x.startsWith('<stream:error'), t, 'handshake');
      c.write(`<handshake>${createHash('sha1').update(id + o.secret).digest('hex')}</handshake>`);
      const reply = await hs;
      if (!reply.startsWith('<handshake')) throw new Error(`handshake refused: ${reply}`);
    });
  }

  /** The underlying socket (for batched writes with backpressure). */
  get rawSocket(): net.Socket {
    return this.socket;
  }
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A connection with no negotiation at all: the peer opens the stream and pushes stanzas. Used
 * to measure the load generator's own receive ceiling against a local blaster.
 */
export class RawBare extends RawStream {
  /** Not connected: data only arrives through feed(). */
  static detached(): RawBare {
    return new RawBare();
  }

  static async connect(service: string, timeoutMs = 10_000): Promise<RawBare> {
    const c = new RawBare();
    await c.connectSocket(service, timeoutMs);
    return c;
  }
}
