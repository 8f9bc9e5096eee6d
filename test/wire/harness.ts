// The in-process wire harness: Hermod cores (pub/sub service on the memory store, the
// notification journal and outbox) and their wires (routes, bounces, presence), composed exactly
// as `hermod start` composes them (src/app/), with no XMPP server and no root. A WireNetwork
// stands in for the servers: it routes every stanza by `to` — to a component (through the same
// link handlers the XEP-0114 connection uses, its reply routed back), to a client's full JID, or
// to every client of a bare JID — serialized and read back as over a socket. What an outbox
// writes to its "socket" is routed the same way, and its barrier IQs go back to it as a server
// would route them. Clients are the TestClient of the end-to-end suite, so the same test runs
// here and against real servers (like xmpp.js's test helpers and Prosody's scripted XML
// conversations: a test reads as stanzas in and out). `send(from, type, xml)` (and `ok`,
// `error`) returns the reply once every notification it caused has been sent; `messages` and
// `to(jid)` hold those notifications.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { Element, parse } from 'ltx';
import { buildWire, startConnection, type Wire } from '../../src/app/component.ts';
import { buildCore, restoreTimers, type ComponentLink, type Core } from '../../src/app/core.ts';
import { StopStack } from '../../src/app/stop-stack.ts';
import type { ConnectionHandlers, ConnectionState } from '../../src/component/connection.ts';
import type { Outbox } from '../../src/component/outbox.ts';
import { validateConfig } from '../../src/config/config.ts';
import { silentLogger } from '../../src/log.ts';
import { bareJid } from '../../src/util/bare-jid.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import type { MessageHandler } from '../../src/xmpp/router.ts';
import { TestClient, type ClientTransport } from '../e2e/client.ts';

export interface WireHarnessOptions {
  /** The component JID; its parent domain's users may create nodes. Default pubsub.alpha.test. */
  jid?: string;
  /** More of the config file (e.g. `pubsub.admins`, `limits`). */
  config?: Record<string, unknown>;
  /** The store to serve (default a fresh MemoryStore); it is opened and closed by the harness. */
  store?: Store;
  /** The network to join (default a new one): components on one network reach each other. */
  network?: WireNetwork;
  /** Message routes by payload namespace, as replication adds them (e.g. partners' pub/sub events). */
  messages?: ReadonlyMap<string, MessageHandler>;
}

const domainOf = (jid: string): string => bareJid(jid).split('@').pop() as string;

/** The servers' part: routes stanzas between components and clients, in process. */
export class WireNetwork {
  /** Stanzas addressed to nobody here (a server, another domain, a client that left). */
  readonly undelivered: Element[] = [];
  /** Every <message/> routed, delivered or not, in order (tests may empty it). */
  readonly messages: Element[] = [];
  private readonly components = new Map<string, ConnectionHandlers>();
  private readonly clients = new Map<string, Set<(stanza: Element) => void>>();

  /** Attaches a component's link handlers under its JID (a domain). */
  attach(jid: string, handlers: ConnectionHandlers): void {
    this.components.set(jid, handlers);
  }

  detach(jid: string): void {
    this.components.delete(jid);
  }

  /** A client bound to `fullJid` (e.g. "alice@alpha.test/desk"); it sends as that JID. */
  client(fullJid: string): TestClient {
    const listeners = new Set<(stanza: Element) => void>();
    const transport: ClientTransport = {
      // What a server does on c2s: stamp the sender, then route.
      send: async (stanza) => this.route(stanza, fullJid),
      stop: async () => {
        for (const l of listeners) this.clients.get(fullJid)?.delete(l);
      },
      onStanza: (listener) => {
        listeners.add(listener);
        const set = this.clients.get(fullJid) ?? new Set();
        set.add(listener);
        this.clients.set(fullJid, set);
      },
    };
    return new TestClient(transport, fullJid);
  }

  /**
   * Routes one stanza (serialized and read back, as over a socket) from `from` to its `to`;
   * a component's reply is routed back. Resolves once the component has answered.
   */
  async route(stanza: Element | string, from?: string): Promise<void> {
    const routed = parse(stanza.toString());
    if (from !== undefined) routed.attrs.from = from;
    const to = String(routed.attrs.to ?? '');
    if (routed.name === 'message') this.messages.push(routed);
    const component = this.components.get(domainOf(to));
    if (component && !to.includes('@')) {
      const reply = await component.onStanza(routed);
      if (reply) await this.route(reply);
      return;
    }
    const targets = to.includes('/') ? [...(this.clients.get(to) ?? [])] : [...this.clients].filter(([full]) => bareJid(full) === to).flatMap(([, l]) => [...l]);
    if (targets.length === 0) this.undelivered.push(routed);
    // Asynchronously, as over a socket: a client's reply waiter is registered before its reply arrives.
    for (const listener of targets) setImmediate(() => listener(routed));
  }
}

/** The link a harness's core uses instead of the XEP-0114 connection: the network, with the outbox on a fake socket. */
class LoopbackLink implements ComponentLink {
  status: ConnectionState = 'offline';

  constructor(
    private readonly jid: string,
    private readonly network: WireNetwork,
    private readonly outbox: Outbox,
  ) {}

  async start(handlers: ConnectionHandlers): Promise<void> {
    this.network.attach(this.jid, handlers);
    this.status = 'online';
    handlers.onStateChange?.('online');
    this.outbox.attach({
      write: (chunk) => {
        for (const stanza of parse(`<stream>${chunk}</stream>`).getChildElements()) {
          // A barrier IQ to the component itself comes back to it, after everything before it.
          if (stanza.attrs.to === this.jid) setImmediate(() => this.outbox.acknowledge(stanza));
          else void this.network.route(stanza);
        }
        return true;
      },
      once: () => undefined,
      removeListener: () => undefined,
    });
  }

  send(stanza: Element): boolean {
    if (this.status !== 'online') return false;
    void this.network.route(stanza);
    return true;
  }

  async stop(): Promise<void> {
    await this.outbox.drained();
    this.outbox.detach();
    this.network.detach(this.jid);
    this.status = 'stopped';
  }
}

export class WireHarness {
  /** The clients `send` uses, by full JID. */
  private readonly senders = new Map<string, TestClient>();

  private constructor(
    readonly jid: string,
    readonly network: WireNetwork,
    readonly core: Core,
    readonly wire: Wire,
    private readonly stack: StopStack,
    private readonly dir: string,
  ) {}

  /** Builds a core and wire on a temp data dir and attaches them to the network. */
  static async start(options: WireHarnessOptions = {}): Promise<WireHarness> {
    const jid = options.jid ?? 'pubsub.alpha.test';
    const network = options.network ?? new WireNetwork();
    const dir = await mkdtemp(path.join(tmpdir(), 'hermod-wire-'));
    const config = validateConfig({ component: { jid, secret: 'wire', server: 'xmpp://127.0.0.1:1' }, dataDir: dir, log: { level: 'silent' }, ...options.config }, dir);
    const component = config.component as NonNullable<typeof config.component>;
    const stack = new StopStack(silentLogger);
    try {
      const core = await buildCore(stack, { config, component, log: silentLogger, store: options.store ?? new MemoryStore(), link: (outbox) => new LoopbackLink(jid, network, outbox) });
      const wire = await buildWire(stack, core, { config, jid, log: silentLogger, messages: options.messages ?? new Map(), storeLabel: 'memory' });
      await startConnection(stack, core, wire);
      restoreTimers(stack, core, silentLogger);
      return new WireHarness(jid, network, core, wire, stack, dir);
    } catch (err) {
      await stack.unwind();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A client on this harness's network bound to `fullJid`. */
  client(fullJid: string): TestClient {
    return this.network.client(fullJid);
  }

  /**
   * Sends `<iq type from to=jid>child</iq>` from the full JID `from` (its client made on first
   * use); resolves to the reply, result or error, once every notification the request caused has
   * been sent.
   */
  async send(from: string, type: 'get' | 'set', child: string): Promise<Element> {
    let sender = this.senders.get(from);
    if (!sender) this.senders.set(from, (sender = this.client(from)));
    const reply = await sender.iq(type, this.jid, child).catch((err: unknown) => {
      if (err instanceof IqError && err.stanza) return err.stanza;
      throw err;
    });
    await this.settled();
    return reply;
  }

  /** `send` that must succeed: resolves to the result; throws with the reply otherwise. */
  async ok(from: string, type: 'get' | 'set', child: string): Promise<Element> {
    const reply = await this.send(from, type, child);
    if (reply.attrs.type !== 'result') throw new Error(`expected a result for ${child}, got ${reply.toString()}`);
    return reply;
  }

  /** `send` that must fail: resolves to its error; throws with the reply otherwise. */
  async error(from: string, type: 'get' | 'set', child: string): Promise<IqError> {
    const reply = await this.send(from, type, child);
    if (reply.attrs.type !== 'error') throw new Error(`expected an error for ${child}, got ${reply.toString()}`);
    return IqError.of(reply);
  }

  /** Every <message/> the network routed (notifications), in order; tests may empty it. */
  get messages(): Element[] {
    return this.network.messages;
  }

  /** The messages sent to `jid`'s bare JID, from index `since` of `messages` on. */
  to(jid: string, since = 0): Element[] {
    const bare = bareJid(jid);
    return this.messages.slice(since).filter((m) => bareJid(String(m.attrs.to ?? '')) === bare);
  }

  /** Stanzas the network could deliver to nobody. */
  get undelivered(): Element[] {
    return this.network.undelivered;
  }

  /** Resolves when every request under way is answered and every queued notification confirmed. */
  async settled(): Promise<void> {
    await this.wire.router.idle();
    await this.core.outbox.drained();
  }

  /** Stops the core and wire (as `hermod stop` would) and removes the temp dir. */
  async stop(): Promise<void> {
    await this.stack.unwind();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * For files that start a fresh harness per test: returns `start(options)`; every harness started
 * through it is stopped after the file (or suite) it was called in.
 */
export function useHarnesses(defaults: WireHarnessOptions = {}): (options?: WireHarnessOptions) => Promise<WireHarness> {
  const started: WireHarness[] = [];
  after(() => Promise.all(started.map((h) => h.stop())));
  return async (options = {}) => {
    const harness = await WireHarness.start({ ...defaults, ...options });
    started.push(harness);
    return harness;
  };
}
