// What `hermod start` runs, composed of small parts (src/app/): application settings ->
// core (store, notification path, pub/sub service, connection built) -> replication -> wire
// (routes, connection started). Tests and the demo call `startHermod` directly.

import type { ConnectionState } from './component/connection.ts';
import type { HermodConfig } from './config/config.ts';
import type { Logger } from './log.ts';
import type { HermodMetrics } from './ops/metrics.ts';
import type { StatusReport } from './ops/status.ts';
import type { PubsubService } from './pubsub/service.ts';
import type { AjatusReplication } from './replication/ajatus.ts';
import type { MidgardReplication } from './replication/midgard.ts';
import type { Store } from './store/store.ts';
import { buildWire, startConnection } from './app/component.ts';
import { buildCore, joinCluster, restoreTimers, type ComponentLink } from './app/core.ts';
import { buildReplication, openAppSettings } from './app/replication.ts';
import { buildOrUnwind, StopStack } from './app/stop-stack.ts';

export interface Hermod {
  readonly config: HermodConfig;
  readonly service: PubsubService;
  readonly connection: ComponentLink;
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
  /**
   * Ends start-up while it waits for a CouchDB that does not answer yet (the application
   * database, a CouchDB store): startHermod then rejects with StartAborted (src/app/wait-for.ts).
   */
  signal?: AbortSignal;
}

/**
 * Starts one Hermod: application settings, the core (store, notification path, pub/sub), the
 * replication sources and sinks, the wire (routes, connection). Each part pushes its stop onto
 * one stack, unwound by `stop()` and by a start that fails half way (nothing is left open).
 * Waits for a CouchDB (application database, CouchDB store) that does not answer yet, as the
 * connection waits for its XMPP server. Throws ConfigError (naming the key) for what the config
 * or application database gets wrong, StartAborted when `signal` ends such a wait.
 */
export async function startHermod(config: HermodConfig, options: StartOptions): Promise<Hermod> {
  const { log } = options;
  const stack = new StopStack(log);
  return buildOrUnwind(stack, async () => {
    const { settings, component } = await openAppSettings(stack, config, log, options.signal);
    const core = await buildCore(stack, { config, component, log, ...(options.store ? { store: options.store } : {}), ...(options.signal ? { signal: options.signal } : {}) });
    const replication = await buildReplication(stack, core, { config, settings, componentJid: component.jid, log });
    const wire = await buildWire(stack, core, {
      config,
      jid: component.jid,
      log,
      messages: replication.messages,
      ...(options.store ? { storeLabel: 'embedded by the caller' } : {}),
      onStateChange: (state) => {
        options.onStateChange?.(state);
        if (state === 'online') replication.reconnected(); // uploads that waited for the server go now
      },
    });
    const online = startConnection(stack, core, wire);
    restoreTimers(stack, core, log); // connect first: at 100 000 nodes the timers would delay serving
    await joinCluster(core); // the work lease: timers and replication run in its holder only
    await replication.start(online);
    let stopped: Promise<void> | undefined;
    const stop = (): Promise<void> =>
      (stopped ??= (async () => {
        log.info('shutting down');
        await stack.unwind();
        log.info('stopped');
      })());
    return {
      config,
      service: core.service,
      connection: core.connection,
      jid: component.jid,
      ajatus: replication.ajatus,
      midgard: replication.midgard,
      metrics: core.metrics,
      status: wire.status,
      online,
      stop,
    };
  });
}
