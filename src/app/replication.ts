// Replication's part of start-up: the application database's settings (where the component's
// credentials may live), the Ajatus and Midgard adapters — each run by the one Replication of
// src/replication/replication.ts, its state in a state space of the core's store — with the
// shared XSLT stage, the message route partners' pub/sub events take, and what starts once the
// component is online. The composition root of replication: the one place that knows every
// adapter, source and sink. Each part pushes its stop onto the caller's stack as soon as it has
// started. The adapters (with nano, dbus-next and the XSLT stage) are imported only when the
// config asks for them: a start without replication does not load them at all.

import type { Element } from 'ltx';
import { ConfigError, parentDomain, type HermodConfig } from '../config/config.ts';
import type { Logger } from '../log.ts';
import type { AjatusReplication } from '../replication/ajatus.ts';
import type { MidgardReplication } from '../replication/midgard.ts';
import type { ReplicationService } from '../replication/replication.ts';
import type { AppSettings } from '../replication/settings.ts';
import { SubscriptionClaims } from '../replication/subscription-claims.ts';
import { NS } from '../xmpp/ns.ts';
import type { MessageHandler } from '../xmpp/router.ts';
import type { ComponentCredentials, Core } from './core.ts';
import { CLOSE_WAIT_MS } from '../component/journal.ts';
import { PublishGate } from './publish-gate.ts';
import type { StopStack } from './stop-stack.ts';
import { COUCH_REQUEST_TIMEOUT_MS, couchUnreachable, describeCouchFailure } from '../store/couch-answers.ts';
import { StartAborted, untilReachable } from './wait-for.ts';

/**
 * Opens the application database's settings (with `appDb`) and finds the component credentials:
 * the config file's, else the `hermod:credentials` document. While CouchDB does not answer it
 * waits (untilReachable; StartAborted when `signal` aborts). Throws ConfigError naming the key
 * when neither has the credentials or CouchDB refuses the database.
 */
export async function openAppSettings(stack: StopStack, config: HermodConfig, log: Logger, signal?: AbortSignal): Promise<{ settings: AppSettings | undefined; component: ComponentCredentials }> {
  if (!config.appDb) {
    if (!config.component) throw new ConfigError('component: missing (required without appDb)');
    return { settings: undefined, component: config.component };
  }
  const [{ default: nano }, { AppSettings }, { redactUrl }] = await Promise.all([import('nano'), import('../replication/settings.ts'), import('../store/couchdb.ts')]);
  const db = nano({ url: config.appDb.url, requestDefaults: { timeout: COUCH_REQUEST_TIMEOUT_MS } }).use<Record<string, unknown> & { _id: string }>(config.appDb.db);
  const settings = new AppSettings(db, log.child({ component: 'settings' }));
  // Waits for a CouchDB that is not up yet (a boot where Hermod comes first); an answer that
  // refuses (credentials, no such database) is a config error.
  const awaited = { what: 'application database', key: 'appDb.url', where: `${redactUrl(config.appDb.url)}/${config.appDb.db}` };
  try {
    await untilReachable(awaited, () => settings.start(), { log, unreachable: couchUnreachable, ...(signal ? { signal } : {}) });
  } catch (err) {
    if (err instanceof StartAborted) throw err;
    throw new ConfigError(`appDb: cannot read database '${config.appDb.db}': ${describeCouchFailure(err, { key: 'appDb.url', dbKey: 'appDb.db' })}`);
  }
  stack.push('application settings', () => settings.stop());
  const component = config.component ?? (await settings.credentials());
  if (!component) throw new ConfigError(`component: not in the config file and no hermod:credentials document in '${config.appDb.db}'`);
  return { settings, component };
}

export interface Replication {
  readonly ajatus: AjatusReplication | undefined;
  readonly midgard: MidgardReplication | undefined;
  /** Message routes by payload namespace: partners' pub/sub events, their MAM results and §8.9.4 affiliation notifications. */
  readonly messages: ReadonlyMap<string, MessageHandler>;
  /** Starts the sources (publishing); partner discovery and subscriptions follow `online`. */
  start(online: Promise<void>): Promise<void>;
  /** The component is online (again): documents waiting for the server (an upload) are tried now. */
  reconnected(): void;
}

export interface ReplicationOptions {
  config: HermodConfig;
  settings: AppSettings | undefined;
  componentJid: string;
  log: Logger;
}

/**
 * Most characters of notifications waiting unwritten in the outbox before replication's next
 * publish waits (≈ 4 MiB: dozens of 64 KiB socket writes, so the socket never idles, while a first
 * sync of a large database cannot fill the heap with stanzas the server has not taken yet).
 */
const REPLICATION_BACKLOG_CHARS = 4 * 1024 * 1024;
/** Longest one such wait (ms): a stalled server slows replication to one batch per wait, never stops it. */
const BACKLOG_WAIT_MS = 5_000;

/** Builds Ajatus replication (with `appDb`) and Midgard replication (with `midgard`), importing only those; starts nothing. */
export async function buildReplication(stack: StopStack, core: Core, options: ReplicationOptions): Promise<Replication> {
  const { config, settings, componentJid, log } = options;
  const { iq, store } = core;
  // The sources record a batch (and advance their checkpoint) once its publishes resolve; a publish
  // resolves when its items are stored, but its notifications are in the journal only with the
  // journal's next batch. A kill -9 in between lost them: recorded as published, never notified.
  // Requests over the wire wait for the journal before their reply (component.ts); so do these.
  // And a source must not outrun the server: each call also waits while more than
  // REPLICATION_BACKLOG_CHARS of notifications wait unwritten in the outbox (Outbox.whenBelow).
  // A stop bounds both waits (src/app/publish-gate.ts).
  const s = core.service;
  const gate = new PublishGate(core.journal, core.outbox, { backlogChars: REPLICATION_BACKLOG_CHARS, backlogWaitMs: BACKLOG_WAIT_MS, stopWaitMs: CLOSE_WAIT_MS });
  const durably =
    <A extends unknown[], R>(call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const result = await call(...args);
      await gate.passed();
      return result;
    };
  const service: ReplicationService = {
    publishMany: durably(s.publishMany.bind(s)),
    retract: durably(s.retract.bind(s)),
    configure: s.configure.bind(s),
    create: s.create.bind(s),
    getAffiliations: s.getAffiliations.bind(s),
    getConfig: s.getConfig.bind(s),
    metadata: s.metadata.bind(s),
    setAffiliations: s.setAffiliations.bind(s),
  };
  const appDb = settings && config.appDb;
  if (!appDb && !config.midgard) return { ajatus: undefined, midgard: undefined, messages: new Map(), start: async () => {}, reconnected: () => {} };
  const { Transforms } = await import('../replication/transforms.ts');
  const transforms = new Transforms({ ...config.transforms, quarantine: core.quarantine, log: log.child({ component: 'transforms' }) });
  // Ajatus and Midgard share the component JID, and so its subscriptions at partners' services.
  const common = { service, iq, store, componentJid, dataDir: config.dataDir, log, transforms, oneCopy: core.relay === undefined, claims: new SubscriptionClaims() };
  const ajatus = settings && appDb ? (await import('../replication/ajatus.ts')).ajatusReplication(common, { couchUrl: appDb.url, config: config.ajatus, settings }) : undefined;
  const midgard = config.midgard ? (await import('../replication/midgard.ts')).midgardReplication(common, config.midgard) : undefined;
  const replications = [ajatus, midgard].filter((r) => r !== undefined);
  // A partner's notification belongs to every replication that follows its node (or to none):
  // Ajatus and Midgard may both follow one node (a Midgard subscription with a stylesheet to a
  // /tags/ node Ajatus follows too) through the one subscription of their shared JID. Each is
  // handed the stanza at once, in arrival order (their per-node bookkeeping runs before their
  // first await); a history result goes to the one whose query it answers.
  const handle = async (stanza: Element): Promise<void> => {
    const results = await Promise.allSettled(replications.map((replication) => replication.handleEvent(stanza)));
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    for (const reason of failures) log.error('a partner notification could not be handled', { from: stanza.attrs.from, reason: String(reason) });
    // Handed again (the cluster's relay tries again) only when no replication took it: one that
    // did would apply it twice.
    if (failures.length > 0 && failures.length === results.length) throw failures[0];
  };
  // Replication runs in the work-lease holder only (src/cluster/cluster.ts): what another
  // process receives goes to it through the store.
  const { cluster, relay } = core;
  relay?.onLeaderStanza(handle); // a failure leaves the event for another try (relay.ts)
  const events: MessageHandler = async (stanza) => {
    if (relay && !cluster.isLeader()) relay.toLeader(stanza);
    else await handle(stanza);
    return undefined;
  };
  const built: Replication = {
    ajatus,
    midgard,
    // Partners' event notifications, their history (XEP-0313 results) and their §8.9.4
    // affiliation notifications (<pubsub><affiliations/></pubsub>): new nodes to follow.
    messages: new Map(replications.length > 0 ? [NS.PUBSUB_EVENT, NS.MAM, NS.PUBSUB].map((ns) => [ns, events] as const) : []),
    reconnected() {
      for (const replication of replications) replication.reconnected();
    },
    async start(online) {
      if (replications.length === 0) return;
      if (!cluster.isLeader()) {
        // Started when this process becomes the work-lease holder; a holder that loses the lease
        // while replicating exits (its sources must not run twice): a supervisor restarts it.
        let started = false;
        cluster.onLeadership((leader) => {
          if (leader && !started) {
            started = true;
            log.info('replication starts here: this process holds the work lease');
            void built.start(online).catch((err: unknown) => log.error('replication could not start', { reason: String(err) }));
          }
        });
        return;
      }
      cluster.onLeadership((leader) => {
        if (leader || !relay || cluster.stopping) return;
        log.error('exiting: the work lease was lost while replicating (another process takes the replication over)');
        process.exit(75);
      });
      // Unwound after the replications: a transform under way when Hermod stops runs to its end
      // (the engine closing under it would interrupt it; its leaf would then be applied again).
      if (replications.length > 0) stack.push('transforms', () => transforms.stop());
      for (const replication of replications) {
        // Pushed first: a source that fails half way through its start is closed too.
        // The gate first: a publish held by a server that is down, or by a journal whose store
        // refuses writes, must not hold the source's stop (PublishGate); also when a later
        // replication fails to start and the stack unwinds from there.
        stack.push(replication === ajatus ? 'Ajatus replication' : 'Midgard replication', () => {
          gate.stop();
          return replication.stop();
        });
        await replication.start(online);
      }
      if (replications.length > 0) transforms.start(); // quarantine retries and stylesheet changes
      // Unwound before the replications stop: a discovery or catch-up waiting on a partner that
      // does not answer (its server gone) ends now instead of after each request's 15 s timeout.
      // Requests to the component's own server (XEP-0356 roster reads of requests still being
      // answered) go on.
      const ownServer = parentDomain(componentJid);
      stack.push('requests to partners', () => iq.cancelAll((to) => to !== ownServer && !to.endsWith(`@${ownServer}`)));
      // Before every replication stops, not only the first unwound: all sources stop together.
      stack.push('publishes held for the server or the store', () => gate.stop());
    },
  };
  return built;
}
