// Wiring, top to bottom: store -> pub/sub core -> notifications -> router -> component
// connection. `startHermod` is what `hermod start` runs; tests and the demo call it directly.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import nano from 'nano';
import { ComponentConnection, type ConnectionState } from './component/connection.ts';
import { IqCaller } from './component/iq-caller.ts';
import { ConfigError, parentDomain, type HermodConfig } from './config/config.ts';
import type { Logger } from './log.ts';
import { PubsubService } from './pubsub/service.ts';
import { AjatusReplication } from './replication/ajatus.ts';
import { AppSettings } from './replication/settings.ts';
import { LevelStore } from './store/level.ts';
import type { Store } from './store/store.ts';
import { VERSION } from './version.ts';
import { approvalAnswerHandler } from './xmpp/approval.ts';
import { basicRoutes } from './xmpp/basic-handlers.ts';
import { commandRoutes } from './xmpp/commands.ts';
import { mamRoutes } from './xmpp/mam.ts';
import { discoRoutes } from './xmpp/disco.ts';
import { parseJid } from './xmpp/jid.ts';
import { NotificationRenderer } from './xmpp/notifications.ts';
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
  if (!store) {
    await mkdir(config.dataDir, { recursive: true });
    store = new LevelStore(path.join(config.dataDir, 'store'), { sync: config.store.sync });
  }
  await store.open();

  const renderer = new NotificationRenderer(component.jid);
  // The connection is created below; the notifier only runs after start, once it exists.
  let connection: ComponentConnection | undefined;
  const creatorDomains = new Set(config.pubsub.creatorDomains ?? [parentDomain(component.jid)]);
  const service = new PubsubService({
    store,
    // The component itself publishes for its sources: it is an admin of its own service.
    admins: [...config.pubsub.admins, component.jid],
    mayCreateNodes: (bare) => {
      const jid = parseJid(bare);
      return !!jid && jid.local !== '' && creatorDomains.has(jid.domain);
    },
    notifier: (event, recipients) => connection?.outbox.push(renderer.render(event, recipients)),
  });

  await service.start(); // restores item expiry timers

  const iq = new IqCaller(component.jid, (stanza) => connection?.send(stanza) ?? false);
  const ajatus =
    settings && config.appDb
      ? new AjatusReplication({ couchUrl: config.appDb.url, config: config.ajatus, settings, service, iq, componentJid: component.jid, dataDir: config.dataDir, log })
      : undefined;
  const approvals = approvalAnswerHandler(service, log);

  const router = new Router({
    jid: component.jid,
    log,
    routes: new Map([
      ...discoRoutes({ service, jid: component.jid, name: config.pubsub.name }),
      ...pubsubRoutes(service),
      ...commandRoutes(service),
      // MAM results are notifications-like messages: through the outbox, on the wire before <fin/>.
      ...mamRoutes(service, component.jid, async (stanzas) => {
        connection?.outbox.push(stanzas);
        await connection?.outbox.drained();
      }),
      ...basicRoutes(VERSION),
    ]),
    onBounce: (stanza) => log.debug('notification bounced', { from: stanza.attrs.from }),
    onMessage: async (stanza) => ((await ajatus?.handleEvent(stanza)) ? undefined : approvals(stanza)),
    onIqResponse: (stanza) => void iq.handleResponse(stanza),
  });

  connection = new ComponentConnection({
    jid: component.jid,
    secret: component.secret,
    server: component.server,
    log,
    onStanza: (stanza) => router.handle(stanza),
    ...(options.onStateChange ? { onStateChange: options.onStateChange } : {}),
  });
  const online = connection.start();
  const conn = connection;
  const usedStore = store;
  if (ajatus) {
    await ajatus.start();
    void online.then(() => ajatus.startPartners()).catch((err: unknown) => log.error('partner discovery could not start', { reason: String(err) }));
  }

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      log.info('shutting down');
      await ajatus?.stop();
      settings?.stop();
      iq.cancelAll();
      await router.idle();
      await service.close();
      await conn.stop();
      await usedStore.close();
      log.info('stopped');
    })());

  return { config, service, connection: conn, jid: component.jid, ajatus, online, stop };
}
