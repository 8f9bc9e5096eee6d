// The wire side of one Hermod: the route tables (IQ requests by element, messages by payload
// namespace), bounces, presence, the status socket and metrics, and finally the connection's
// start. Everything it opens is pushed onto the caller's stop stack.

import type { Element } from 'ltx';
import type { ConnectionState } from '../component/connection.ts';
import { CLOSE_WAIT_MS } from '../component/journal.ts';
import type { HermodConfig } from '../config/config.ts';
import { ConfigError, parentDomain } from '../config/config.ts';
import type { Logger } from '../log.ts';
import { closeStatus, serveStatus, type StatusReport } from '../ops/status.ts';
import { describeBackend } from '../store/backends.ts';
import { VERSION } from '../version.ts';
import { approvalAnswerHandler } from '../xmpp/approval.ts';
import { basicRoutes } from '../xmpp/basic-handlers.ts';
import { BounceTracker } from '../xmpp/bounces.ts';
import { commandRoutes } from '../xmpp/commands.ts';
import { discoRoutes } from '../xmpp/disco.ts';
import { mamRoutes } from '../xmpp/mam.ts';
import { NS } from '../xmpp/ns.ts';
import { refusalReply } from '../xmpp/parser.ts';
import { CONTACTS_SPACE, PresenceHandler } from '../xmpp/presence.ts';
import { PRIVILEGE_NAMESPACES } from '../xmpp/privilege.ts';
import { pubsubRoutes } from '../xmpp/pubsub-handlers.ts';
import { Router, type MessageHandler } from '../xmpp/router.ts';
import type { Core } from './core.ts';
import type { StopStack } from './stop-stack.ts';

export interface ComponentOptions {
  config: HermodConfig;
  jid: string;
  log: Logger;
  /** More message routes by payload namespace (replication's partner events). */
  messages: ReadonlyMap<string, MessageHandler>;
  /** Shown by `hermod status` as the store (e.g. "embedded by the caller"). */
  storeLabel?: string;
  onStateChange?: (state: ConnectionState) => void;
}

export interface Wire {
  readonly router: Router;
  /** What `hermod status` shows. */
  status(): Promise<StatusReport>;
  /** One incoming stanza, as the connection hands it over: resolves to the reply, if any. */
  handleStanza(stanza: Element): Promise<Element | undefined>;
  /** The connection's state changed (presence, privileges, metrics follow it). */
  stateChanged(state: ConnectionState): void;
  /**
   * Hermod is stopping: takes no further requests (Router.close) and resolves once every stanza
   * under way has been handled and its reply handed to the connection — including the wait for
   * the journal to hold the notifications a request caused — or after CLOSE_WAIT_MS (a store
   * that refuses writes must not hold the stop; the journal's close then says what was lost).
   */
  idle(): Promise<void>;
}

/** The router of requests and messages that a core serves (no connection: the wire harness uses it too). */
export function buildRouter(core: Core, options: Pick<ComponentOptions, 'config' | 'jid' | 'log' | 'messages'> & { presence: PresenceHandler; bounces: BounceTracker }): Router {
  const { config, jid, log } = options;
  const { service, privileges, outbox, iq } = core;
  const approvals = approvalAnswerHandler(service, log);
  const grant: MessageHandler = (stanza) => void privileges.handleMessage(stanza);
  return new Router({
    jid,
    log,
    routes: new Map([
      ...discoRoutes({ service, jid, name: config.pubsub.name, extraFeatures: () => privileges.features() }),
      ...pubsubRoutes(service),
      ...commandRoutes(service, core.signingSecret),
      // MAM results are notifications-like messages: through the outbox, on the wire before <fin/>.
      ...mamRoutes(service, jid, async (stanzas) => {
        outbox.push(stanzas);
        await outbox.drained();
      }),
      ...basicRoutes(VERSION),
    ]),
    messages: new Map<string, MessageHandler>([
      ...PRIVILEGE_NAMESPACES.map((ns) => [ns, grant] as const),
      ...options.messages,
      [NS.DATA_FORMS, approvals], // owners' answers to subscription approval forms (XEP-0060 §8.6)
    ]),
    onBounce: (stanza) => options.bounces.bounced(stanza),
    onPresence: (stanza) => options.presence.handle(stanza),
    // A reply to another member's request (ejabberd balanced it here) goes back through the store.
    onIqResponse: (stanza) => void (iq.handleResponse(stanza) || core.relay?.route(stanza)),
  });
}

/**
 * Builds the wire side: routes, bounces, presence, the status socket and the metrics server
 * (pushed onto `stack`). Connects nothing: `startConnection` does, and the wire harness
 * (test/wire/harness.ts) feeds stanzas to `handleStanza` instead.
 * Throws ConfigError naming `metrics.port` when the metrics port cannot be bound.
 */
export async function buildWire(stack: StopStack, core: Core, options: ComponentOptions): Promise<Wire> {
  const { config, jid, log } = options;
  const { service, connection, metrics, privileges, store } = core;
  const startedAt = Date.now();
  const bounces = new BounceTracker({
    maxBounces: config.pubsub.maxBounces,
    windowMs: config.pubsub.bounceWindowSeconds * 1000,
    unsubscribe: async (bare) => (await service.dropUnreachable(bare)).length,
    log,
    onBounce: (condition) => metrics.bounced(condition),
    onUnsubscribed: (count) => metrics.unsubscribedAfterBounces(count),
  });
  const presence = new PresenceHandler({
    jid,
    space: store.state(CONTACTS_SPACE),
    dataDir: config.dataDir,
    send: (stanza) => connection.send(stanza),
    tracker: core.presence,
    // send_last_published_item on_sub_and_presence
    onAvailable: (full) => void service.entityAvailable(full).catch((err: unknown) => log.error('last published item on presence failed', { jid: full, reason: String(err) })),
    log: log.child({ component: 'presence' }),
    // The attached server's users (as XEP-0356 counts the server's domains: src/app/core.ts).
    localDomains: new Set([parentDomain(jid), ...(config.pubsub.creatorDomains ?? [])]),
  });
  await presence.load();
  stack.push('presence contacts', () => presence.close());
  const router = buildRouter(core, { ...options, presence, bounces });

  const status = async (): Promise<StatusReport> => {
    const nodes = await store.listNodes();
    let subscriptions = 0;
    for (const node of nodes) subscriptions += (await store.getSubscriptions(node.id)).length;
    return {
      version: VERSION,
      jid,
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      connection: connection.status,
      store: options.storeLabel ?? describeBackend(config.store.backend, config),
      nodes: nodes.length,
      subscriptions,
      queues: { outboxPending: core.outbox.unrouted, notificationsSent: core.outbox.sent, notificationsDropped: core.outbox.dropped, requestsInFlight: router.inFlightCount, requestsRefusedBusy: router.refusedBusyCount },
      bounces: { tracked: bounces.tracked, unsubscribed: bounces.unsubscribed },
      cluster: await core.cluster.status(),
    };
  };
  const statusServer = await serveStatus(config.dataDir, status, core.quarantine).catch((err: unknown) => {
    log.warn('status socket unavailable: `hermod status` will not reach this instance', { dataDir: config.dataDir, reason: String(err) });
    return undefined;
  });
  if (statusServer) stack.push('status socket', () => closeStatus(statusServer, config.dataDir));
  if (config.metrics) {
    const { host, port } = config.metrics;
    const server = await metrics.serve(host, port).catch((err: unknown) => {
      throw new ConfigError(`metrics.port: cannot listen on ${host}:${port}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    });
    stack.push('metrics server', () => new Promise((resolve) => {
      server.close(resolve);
      server.closeAllConnections();
    }));
    log.info('metrics served', { url: `http://${host}:${port}/metrics` });
  }

  // Stanzas under way, from their arrival until their reply is handed back (for idle()).
  const handling = new Set<Promise<unknown>>();
  const handle = async (stanza: Element): Promise<Element | undefined> => {
    metrics.received(stanza);
    const refused = refusalReply(stanza); // too deep or too large for the stream parser's bounds
    if (refused) {
      log.warn('stanza refused by the stream parser', { from: stanza.attrs.from, name: stanza.name, reason: refused.reason });
      return refused.reply;
    }
    if (stanza.attrs.type !== 'error') bounces.heard(stanza.attrs.from as string | undefined);
    const recorded = core.journal.recorded;
    const reply = await router.handle(stanza);
    // Notifications the request caused are in the journal before it is answered (one batch for
    // everything recorded meanwhile: src/component/journal.ts).
    if (reply && core.journal.recorded !== recorded) await core.journal.durable();
    if (reply) metrics.replied(reply);
    return reply;
  };
  return {
    router,
    status,
    handleStanza: (stanza) => {
      const under = handle(stanza);
      handling.add(under);
      const done = (): void => void handling.delete(under);
      under.then(done, done);
      return under;
    },
    idle: async () => {
      router.close();
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)));
      // Every stanza's handling includes its dispatch. Reactions run in the order they were
      // added: the connection's own (which sends the reply) came first, so each reply is on its
      // way once this wait sees its stanza done.
      await Promise.race([Promise.allSettled([...handling]), bound]);
      clearTimeout(timer);
    },
    stateChanged: (state) => {
      if (state === 'online') presence.online();
      else {
        // The server shutting down ended every user's session too: their presence after it is new.
        presence.offline(connection.lastStreamError === 'system-shutdown');
        privileges.reset();
      }
      metrics.connection(state);
      options.onStateChange?.(state);
    },
  };
}

/**
 * Starts the component connection (it retries with backoff until stopped) with `wire` handling
 * its stanzas; pushes its stop so that it unwinds after the requests under way are answered.
 * Resolves once the component has been online.
 */
export function startConnection(stack: StopStack, core: Core, wire: Wire): Promise<void> {
  const { connection } = core;
  // Unwound in the opposite order: requests under way are answered, then the stream is flushed and closed.
  stack.push('component connection', () => connection.stop());
  // What digest windows hold goes out with the stream's last flush (else it waits in the journal).
  stack.push('notification digests', () => core.notifications.flushDigests());
  stack.push('requests under way', () => wire.idle());
  return connection.start({ onStanza: (stanza) => wire.handleStanza(stanza), onStateChange: (state) => wire.stateChanged(state) });
}
