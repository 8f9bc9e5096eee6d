// Wiring, top to bottom: store -> pub/sub core -> notifications -> router -> component
// connection. `startHermod` is what `hermod start` runs; tests and the demo call it directly.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { ComponentConnection, type ConnectionState } from './component/connection.ts';
import type { HermodConfig } from './config/config.ts';
import type { Logger } from './log.ts';
import { PubsubService } from './pubsub/service.ts';
import { LevelStore } from './store/level.ts';
import type { Store } from './store/store.ts';
import { VERSION } from './version.ts';
import { basicRoutes } from './xmpp/basic-handlers.ts';
import { discoRoutes } from './xmpp/disco.ts';
import { parseJid } from './xmpp/jid.ts';
import { NotificationRenderer } from './xmpp/notifications.ts';
import { pubsubRoutes } from './xmpp/pubsub-handlers.ts';
import { Router } from './xmpp/router.ts';

export interface Hermod {
  readonly config: HermodConfig;
  readonly service: PubsubService;
  readonly connection: ComponentConnection;
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

export async function startHermod(config: HermodConfig, options: StartOptions): Promise<Hermod> {
  const { log } = options;
  let store = options.store;
  if (!store) {
    await mkdir(config.dataDir, { recursive: true });
    store = new LevelStore(path.join(config.dataDir, 'store'), { sync: config.store.sync });
  }
  await store.open();

  const renderer = new NotificationRenderer(config.component.jid);
  // The connection is created below; the notifier only runs after start, once it exists.
  let connection: ComponentConnection | undefined;
  const creatorDomains = new Set(config.pubsub.creatorDomains);
  const service = new PubsubService({
    store,
    admins: config.pubsub.admins,
    mayCreateNodes: (bare) => {
      const jid = parseJid(bare);
      return !!jid && jid.local !== '' && creatorDomains.has(jid.domain);
    },
    notifier: (event, recipients) => connection?.outbox.push(renderer.render(event, recipients)),
  });

  const router = new Router({
    jid: config.component.jid,
    log,
    routes: new Map([
      ...discoRoutes({ service, jid: config.component.jid, name: config.pubsub.name }),
      ...pubsubRoutes(service),
      ...basicRoutes(VERSION),
    ]),
    onBounce: (stanza) => log.debug('notification bounced', { from: stanza.attrs.from }),
  });

  connection = new ComponentConnection({
    jid: config.component.jid,
    secret: config.component.secret,
    server: config.component.server,
    log,
    onStanza: (stanza) => router.handle(stanza),
    ...(options.onStateChange ? { onStateChange: options.onStateChange } : {}),
  });
  const online = connection.start();
  const conn = connection;
  const usedStore = store;

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      log.info('shutting down');
      await router.idle();
      await service.idle();
      await conn.stop();
      await usedStore.close();
      log.info('stopped');
    })());

  return { config, service, connection: conn, online, stop };
}
