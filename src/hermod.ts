// Wiring, top to bottom: store -> pub/sub core -> notifications -> router -> component
// connection. `startHermod` is what `hermod start` runs; tests and the demo call it directly.

import { mkdir } from 'node:fs/promises';
import nano from 'nano';
import { ComponentConnection, type ConnectionState } from './component/connection.ts';
import { IqCaller } from './component/iq-caller.ts';
import { NotificationJournal } from './component/journal.ts';
import { NotificationQueue } from './component/notification-queue.ts';
import { ConfigError, parentDomain, type HermodConfig } from './config/config.ts';
import type { Logger } from './log.ts';
import { PubsubService } from './pubsub/service.ts';
import { AjatusReplication } from './replication/ajatus.ts';
import { MidgardReplication } from './replication/midgard.ts';
import { AppSettings } from './replication/settings.ts';
import { Transforms } from './replication/transforms.ts';
import { closeStatus, serveStatus, type StatusReport } from './ops/status.ts';
import { HermodMetrics } from './ops/metrics.ts';
import { createStore, describeBackend, storeSize } from './store/backends.ts';
import { BounceTracker } from './xmpp/bounces.ts';
import type { Store } from './store/store.ts';
import { VERSION } from './version.ts';
import { approvalAnswerHandler } from './xmpp/approval.ts';
import { basicRoutes } from './xmpp/basic-handlers.ts';
import { commandRoutes } from './xmpp/commands.ts';
import { mamRoutes } from './xmpp/mam.ts';
import { discoRoutes } from './xmpp/disco.ts';
import { parseJid } from './xmpp/jid.ts';
import { refusalReply } from './xmpp/parser.ts';
import { NotificationRenderer } from './xmpp/notifications.ts';
import { PresenceHandler, PresenceTracker } from './xmpp/presence.ts';
import { Privileges } from './xmpp/privilege.ts';
import { pubsubRoutes } from './xmpp/pubsub-handlers.ts';
import { Router } from './xmpp/router.ts';

export interface Hermod {
  readonly config: HermodConfig;
  readonly service: PubsubService;
  readonly connection: ComponentConnection;
  /** The component JID in use (from the config file or the app database). */
  readonly jid: string;
  /** Ajatus/CouchDB replication, when the config names an application database. */
  readonly ajatus: AjatusReplication | undefined;
  /** Midgard replication, when the config has a `midgard` section. */
  readonly midgard: MidgardReplication | undefined;
  readonly metrics: HermodMetrics;
  /** What `hermod status` shows. */
  status(): Promise<StatusReport>;
  /** Resolves once the component has been online (it keeps retrying until then). */
  readonly online: Promise<void>;
  /** Clean shutdown: answer requests under way, flush notifications, close stream and store. */
  stop(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  /** Use this store instead of the embedded one under dataDir. */
  store?: Store;
  onStateChange?: (state: ConnectionState) => void;
}

/** Opens the application database's settings and finds the component credentials. */
async function appSettings(config: HermodConfig, log: Logger): Promise<{ settings: AppSettings | undefined; component: NonNullable<HermodConfig['component']> }> {
  if (!config.appDb) {
    if (!config.component) throw new ConfigError('component: missing (required without appDb)');
    return { settings: undefined, component: config.component };
  }
  const db = nano(config.appDb.url).use<Record<string, unknown> & { _id: string }>(config.appDb.db);
  const settings = new AppSettings(db, log.child({ component: 'settings' }));
  try {
    await settings.start();
  } catch (err) {
    throw new ConfigError(`appDb: cannot read database '${config.appDb.db}': ${(err as Error).message}`);
  }
  const component = config.component ?? (await settings.credentials());
  if (!component) throw new ConfigError(`component: not in the config file and no hermod:credentials document in '${config.appDb.db}'`);
  return { settings, component };
}

export async function startHermod(config: HermodConfig, options: StartOptions): Promise<Hermod> {
  const { log } = options;
  const { settings, component } = await appSettings(config, log);
  let store = options.store;
  await mkdir(config.dataDir, { recursive: true });
  if (!store) store = createStore(config, { log: log.child({ component: 'store' }) });
  await store.open();
  const startedAt = Date.now();
  const metrics = new HermodMetrics({
    outbox: () => connection?.outbox ?? { pending: 0, sent: 0, dropped: 0 },
    ...(options.store ? {} : { storeSize: () => storeSize(config) }),
  });

  const renderer = new NotificationRenderer(component.jid);
  // The connection is created below; notifications recorded before it exists are queued by restore().
  let connection: ComponentConnection | undefined;
  const { journal, undelivered } = NotificationJournal.open(config.dataDir, log);
  const notifications = new NotificationQueue(() => connection?.outbox, journal, (event, recipients) => renderer.render(event, recipients));
  const creatorDomains = new Set(config.pubsub.creatorDomains ?? [parentDomain(component.jid)]);
  // XEP-0356: the attached server's domains may grant roster/presence access (src/xmpp/privilege.ts).
  const privileges = new Privileges({
    serverDomains: [parentDomain(component.jid), ...creatorDomains],
    iq: { request: (...args) => iq.request(...args) },
    log: log.child({ component: 'privilege' }),
  });
  const presence = new PresenceTracker();
  const service = new PubsubService({
    rosters: privileges,
    presence,
    store,
    // The component itself publishes for its sources: it is an admin of its own service.
    admins: [...config.pubsub.admins, component.jid],
    // Admins, and so the component publishing for replication, are exempt from node quota and rate.
    limits: config.limits,
    onError: (err) => log.error('background pub/sub work failed (item expiry, lease end or roster read)', { reason: String(err) }),
    mayCreateNodes: (bare) => {
      const jid = parseJid(bare);
      return !!jid && jid.local !== '' && creatorDomains.has(jid.domain);
    },
    notifier: (event, recipients) => {
      const t0 = performance.now();
      const count = notifications.notify(event, recipients);
      metrics.notified(event.kind, count, (performance.now() - t0) / 1000);
    },
  });

  const iq = new IqCaller(component.jid, (stanza) => connection?.send(stanza) ?? false);
  const transforms = new Transforms({ ...config.transforms, dataDir: config.dataDir, log: log.child({ component: 'transforms' }) });
  const ajatus =
    settings && config.appDb
      ? new AjatusReplication({ couchUrl: config.appDb.url, config: config.ajatus, settings, service, iq, componentJid: component.jid, dataDir: config.dataDir, log, transforms })
      : undefined;
  const midgard = config.midgard ? new MidgardReplication({ config: config.midgard, service, iq, componentJid: component.jid, dataDir: config.dataDir, log, transforms }) : undefined;
  const approvals = approvalAnswerHandler(service, log);
  const bounces = new BounceTracker({
    maxBounces: config.pubsub.maxBounces,
    unsubscribe: async (jid) => (await service.dropUnreachable(jid)).length,
    log,
    onBounce: (condition) => metrics.bounced(condition),
    onUnsubscribed: (count) => metrics.unsubscribedAfterBounces(count),
  });

  const presenceHandler = new PresenceHandler({
    jid: component.jid,
    dataDir: config.dataDir,
    send: (stanza) => connection?.send(stanza) ?? false,
    tracker: presence,
    // send_last_published_item on_sub_and_presence
    onAvailable: (full) => void service.entityAvailable(full).catch((err: unknown) => log.error('last published item on presence failed', { jid: full, reason: String(err) })),
    log: log.child({ component: 'presence' }),
  });
  const router = new Router({
    jid: component.jid,
    log,
    routes: new Map([
      ...discoRoutes({ service, jid: component.jid, name: config.pubsub.name, extraFeatures: () => privileges.features() }),
      ...pubsubRoutes(service),
      ...commandRoutes(service),
      // MAM results are notifications-like messages: through the outbox, on the wire before <fin/>.
      ...mamRoutes(service, component.jid, async (stanzas) => {
        connection?.outbox.push(stanzas);
        await connection?.outbox.drained();
      }),
      ...basicRoutes(VERSION),
    ]),
    onBounce: (stanza) => bounces.bounced(stanza),
    onPresence: (stanza) => presenceHandler.handle(stanza),
    onMessage: async (stanza) => (privileges.handleMessage(stanza) || (await ajatus?.handleEvent(stanza)) || (await midgard?.handleEvent(stanza)) ? undefined : approvals(stanza)),
    onIqResponse: (stanza) => void iq.handleResponse(stanza),
  });

  connection = new ComponentConnection({
    jid: component.jid,
    secret: component.secret,
    server: component.server,
    log,
    onStanza: async (stanza) => {
      metrics.received(stanza);
      const refused = refusalReply(stanza); // too deep or too large for the stream parser's bounds
      if (refused) {
        log.warn('stanza refused by the stream parser', { from: stanza.attrs.from, name: stanza.name, reason: refused.reason });
        return refused.reply;
      }
      if (stanza.attrs.type !== 'error') bounces.heard(stanza.attrs.from as string | undefined);
      const reply = await router.handle(stanza);
      if (reply) metrics.replied(reply);
      return reply;
    },
    onStateChange: (state) => {
      if (state === 'online') presenceHandler.online();
      else {
        presenceHandler.offline();
        privileges.reset();
      }
      metrics.connection(state);
      options.onStateChange?.(state);
    },
    outbox: {
      barrierJid: component.jid,
      onConfirmed: (tag) => {
        journal.confirm(tag);
        if (connection?.outbox.pending === 0) journal.allConfirmed();
      },
      onDropped: (tags) => journal.dropped(tags),
      onWriting: (tag) => journal.written(tag),
      onRewound: () => journal.rewound(),
    },
  });
  const restored = notifications.restore(undelivered);
  if (restored > 0) log.info('undelivered notifications queued from the journal', { stanzas: restored, events: undelivered.length });
  const online = connection.start();
  // Connect first, then re-arm item-expiry and lease timers from the store's timer index
  // (reads that meanwhile find an item past its expiry leave it out).
  const timersRestored = service.start().catch((err: unknown) => log.error('item expiry and lease timers could not be restored', { reason: String(err) }));
  const conn = connection;
  const usedStore = store;
  const status = async (): Promise<StatusReport> => {
    const nodes = await usedStore.listNodes();
    let subscriptions = 0;
    for (const node of nodes) subscriptions += (await usedStore.getSubscriptions(node.id)).length;
    return {
      version: VERSION,
      jid: component.jid,
      pid: process.pid,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      connection: conn.status,
      store: options.store ? 'embedded by the caller' : describeBackend(config.store.backend, config),
      nodes: nodes.length,
      subscriptions,
      queues: { outboxPending: conn.outbox.pending, notificationsSent: conn.outbox.sent, notificationsDropped: conn.outbox.dropped, requestsInFlight: router.inFlightCount },
      bounces: { tracked: bounces.tracked, unsubscribed: bounces.unsubscribed },
    };
  };
  const statusServer = await serveStatus(config.dataDir, status).catch((err: unknown) => {
    log.warn('status socket unavailable: `hermod status` will not reach this instance', { dataDir: config.dataDir, reason: String(err) });
    return undefined;
  });
  let metricsServer: Awaited<ReturnType<HermodMetrics['serve']>> | undefined;
  if (config.metrics) {
    try {
      metricsServer = await metrics.serve(config.metrics.host, config.metrics.port);
      log.info('metrics served', { url: `http://${config.metrics.host}:${config.metrics.port}/metrics` });
    } catch (err) {
      await conn.stop(0);
      if (statusServer) await closeStatus(statusServer, config.dataDir);
      journal.close();
      await timersRestored;
      await usedStore.close();
      throw new ConfigError(`metrics.port: cannot listen on ${config.metrics.host}:${config.metrics.port}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
  if (ajatus) {
    await ajatus.start();
    void online.then(() => ajatus.startPartners()).catch((err: unknown) => log.error('partner discovery could not start', { reason: String(err) }));
  }
  if (midgard) {
    await midgard.start();
    void online.then(() => midgard.startPartners());
  }
  if (ajatus || midgard) transforms.start(); // quarantine retries and stylesheet changes

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      log.info('shutting down');
      await transforms.stop();
      await ajatus?.stop();
      await midgard?.stop();
      settings?.stop();
      iq.cancelAll();
      await router.idle();
      await timersRestored;
      await service.close();
      await conn.stop();
      journal.close();
      await usedStore.close();
      if (metricsServer) {
        const server = metricsServer;
        await new Promise((resolve) => {
          server.close(resolve);
          server.closeAllConnections();
        });
      }
      if (statusServer) await closeStatus(statusServer, config.dataDir);
      log.info('stopped');
    })());

  return { config, service, connection: conn, jid: component.jid, ajatus, midgard, metrics, status, online, stop };
}
