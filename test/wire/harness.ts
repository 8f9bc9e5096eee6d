// The in-process wire harness: one Hermod core (pub/sub service on the memory store, the
// notification journal and outbox) and its wire (routes, bounces, presence) exactly as
// `hermod start` composes them (src/app/), with no XMPP server and no root. Clients are the
// same TestClient the end-to-end suite uses: what they send goes to the wire as the connection
// would hand it over, replies come back to the sender, and what the outbox writes to its
// "socket" is parsed and delivered by `to` (a full JID to that client, a bare JID to all of its
// clients), barrier IQs going back to the outbox as a server would route them. Like xmpp.js's
// test helpers and Prosody's scripted XML conversations: a test reads as stanzas in and out.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Element, parse } from 'ltx';
import { buildWire, type Wire } from '../../src/app/component.ts';
import { buildCore, type Core } from '../../src/app/core.ts';
import { StopStack } from '../../src/app/stop-stack.ts';
import { validateConfig } from '../../src/config/config.ts';
import { silentLogger } from '../../src/log.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';
import { TestClient, type ClientTransport } from '../e2e/client.ts';

export interface WireHarnessOptions {
  /** The component JID; its parent domain's users may create nodes. Default pubsub.alpha.test. */
  jid?: string;
  /** More of the config file (e.g. `pubsub.admins`, `limits`). */
  config?: Record<string, unknown>;
  /** The store to serve (default a fresh MemoryStore); it is opened and closed by the harness. */
  store?: Store;
}

const bareOf = (jid: string): string => jid.split('/')[0] as string;

export class WireHarness {
  /** Stanzas the component addressed to JIDs that have no client here (e.g. a server or another domain). */
  readonly undelivered: Element[] = [];
  private readonly clients = new Map<string, Array<(stanza: Element) => void>>();

  private constructor(
    readonly jid: string,
    readonly core: Core,
    readonly wire: Wire,
    private readonly stack: StopStack,
    private readonly dir: string,
  ) {}

  /** Builds a core and wire on a temp data dir and attaches the outbox to the in-process "server". */
  static async start(options: WireHarnessOptions = {}): Promise<WireHarness> {
    const jid = options.jid ?? 'pubsub.alpha.test';
    const dir = await mkdtemp(path.join(tmpdir(), 'hermod-wire-'));
    const config = validateConfig({ component: { jid, secret: 'wire', server: 'xmpp://127.0.0.1:1' }, dataDir: dir, log: { level: 'silent' }, ...options.config }, dir);
    const component = config.component as NonNullable<typeof config.component>;
    const stack = new StopStack(silentLogger);
    const core = await buildCore(stack, { config, component, log: silentLogger, store: options.store ?? new MemoryStore() });
    const wire = await buildWire(stack, core, { config, jid, log: silentLogger, messages: new Map(), storeLabel: 'memory' });
    stack.push('requests under way', () => wire.router.idle());
    const harness = new WireHarness(jid, core, wire, stack, dir);
    core.outbox.attach({
      write: (chunk) => {
        harness.written(chunk);
        return true;
      },
      once: () => undefined,
      removeListener: () => undefined,
    });
    return harness;
  }

  /** A client bound to `fullJid` (e.g. "alice@alpha.test/desk"); it sends as that JID. */
  client(fullJid: string): TestClient {
    const listeners: Array<(stanza: Element) => void> = [];
    const transport: ClientTransport = {
      send: async (stanza) => {
        // What a server does on c2s: stamp the sender, route to the component.
        const routed = parse(stanza.toString());
        routed.attrs.from = fullJid;
        routed.attrs.to ??= this.jid;
        const reply = await this.wire.handleStanza(routed);
        // Serialized and read back, as over a socket (payloads are kept as raw XML text inside).
        if (reply) this.deliver(parse(reply.toString()));
      },
      stop: async () => {
        const list = this.clients.get(fullJid) ?? [];
        for (const l of listeners) list.splice(list.indexOf(l), 1);
      },
      onStanza: (listener) => {
        listeners.push(listener);
        this.clients.set(fullJid, [...(this.clients.get(fullJid) ?? []), listener]);
      },
    };
    return new TestClient(transport, fullJid);
  }

  /** Resolves when every notification queued so far has been written and delivered. */
  async settled(): Promise<void> {
    await this.wire.router.idle();
    await this.core.outbox.drained();
  }

  /** Stops the core and wire (as `hermod stop` would) and removes the temp dir. */
  async stop(): Promise<void> {
    await this.stack.unwind();
    await rm(this.dir, { recursive: true, force: true });
  }

  private written(chunk: string): void {
    for (const stanza of parse(`<stream>${chunk}</stream>`).getChildElements()) {
      // A barrier IQ to the component itself comes back to it, after everything before it.
      if (stanza.attrs.to === this.jid) setImmediate(() => this.core.outbox.acknowledge(stanza));
      else this.deliver(stanza);
    }
  }

  private deliver(stanza: Element): void {
    const to = String(stanza.attrs.to ?? '');
    const targets = to.includes('/') ? (this.clients.get(to) ?? []) : [...this.clients].filter(([full]) => bareOf(full) === to).flatMap(([, l]) => l);
    if (targets.length === 0) this.undelivered.push(stanza);
    // Asynchronously, as over a socket: a client's reply waiter is registered before its reply arrives.
    for (const listener of targets) setImmediate(() => listener(stanza));
  }
}
