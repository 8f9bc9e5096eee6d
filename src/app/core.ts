// The core of one Hermod: store, durable notification path (journal -> queue -> outbox), the
// component connection (built, not started), the IQ caller, XEP-0356 privileges, presence and
// the pub/sub service. Everything is built in dependency order, so nothing is looked up lazily;
// whatever is opened is pushed onto the caller's stop stack right away. Nothing here connects.

import { mkdir } from 'node:fs/promises';
import type { Element } from 'ltx';
import { Cluster } from '../cluster/cluster.ts';
import { Relay, RELAY_SPACE } from '../cluster/relay.ts';
import { ComponentConnection, type ConnectionHandlers, type ConnectionState } from '../component/connection.ts';
import { IqCaller } from '../component/iq-caller.ts';
import { JOURNAL_SPACE, NotificationJournal } from '../component/journal.ts';
import { NotificationQueue } from '../component/notification-queue.ts';
import { Outbox } from '../component/outbox.ts';
import { ConfigError, parentDomain, type HermodConfig } from '../config/config.ts';
import { COMMAND_NODES } from '../xmpp/commands.ts';
import type { Logger } from '../log.ts';
import { HermodMetrics } from '../ops/metrics.ts';
import { PubsubService } from '../pubsub/service.ts';
import { createStore, storeSize } from '../store/backends.ts';
import { CouchStoreError, redactUrl } from '../store/couchdb.ts';
import { Quarantine, QUARANTINE_SPACE } from '../transform/quarantine.ts';
import type { Store } from '../store/store.ts';
import { parseJid } from '../xmpp/jid.ts';
import { NotificationRenderer } from '../xmpp/notifications.ts';
import { PresenceTracker } from '../xmpp/presence.ts';
import { Privileges } from '../xmpp/privilege.ts';
import type { StopStack } from './stop-stack.ts';
import { StartAborted, untilReachable } from './wait-for.ts';

export interface ComponentCredentials {
  jid: string;
  secret: string;
  server: string;
}

/** The component's link to its server: the XEP-0114 connection, or the wire harness's loopback. */
export interface ComponentLink {
  readonly status: ConnectionState;
  /** The condition of the stream error the server ended the last connection with (e.g. `system-shutdown`), if any. */
  readonly lastStreamError?: string | undefined;
  /** Sends a stanza now if online; false when it could not be sent. */
  send(stanza: Element): boolean;
  /** Starts (and keeps) the link; resolves once online for the first time. */
  start(handlers: ConnectionHandlers): Promise<void>;
  /** Flushes the outbox (bounded) and closes the link. */
  stop(): Promise<void>;
}

export interface Core {
  /** Signs what must be checked by any member of a cluster (XEP-0050 session ids): the component secret, which they share. */
  readonly signingSecret: string;
  readonly store: Store;
  readonly service: PubsubService;
  readonly connection: ComponentLink;
  readonly outbox: Outbox;
  readonly iq: IqCaller;
  readonly privileges: Privileges;
  readonly presence: PresenceTracker;
  readonly metrics: HermodMetrics;
  /** This process as a member of the processes sharing the store (alone on LevelDB). */
  readonly cluster: Cluster;
  readonly journal: NotificationJournal;
  /** Replies relayed between members (undefined on a store only this process uses). */
  readonly relay: Relay | undefined;
  /** Leaves whose transform failed (src/transform/quarantine.ts), in the store. */
  readonly quarantine: Quarantine;
  /** Journalled fan-out and the digest windows (src/component/notification-queue.ts). */
  readonly notifications: NotificationQueue;
}

export interface CoreOptions {
  config: HermodConfig;
  component: ComponentCredentials;
  log: Logger;
  /** Use this store instead of the configured one (tests, the demo); it is still opened and closed here. */
  store?: Store;
  /** Another link than the XEP-0114 connection to `component.server` (the wire harness). */
  link?: (outbox: Outbox) => ComponentLink;
  /** Ends a wait for a CouchDB store that does not answer yet (StartAborted). */
  signal?: AbortSignal;
}

/**
 * Builds the core; pushes the closing of the store, the journal and the service onto `stack`.
 * A CouchDB store that does not answer yet is waited for (untilReachable; StartAborted when
 * `signal` aborts). Throws what opening the store or the journal throws otherwise (nothing stays
 * open: the stack has it).
 */
export async function buildCore(stack: StopStack, options: CoreOptions): Promise<Core> {
  const { config, component, log } = options;
  await mkdir(config.dataDir, { recursive: true });
  const store = options.store ?? createStore(config, { log: log.child({ component: 'store' }) });
  const couch = config.store.backend === 'couchdb' ? config.store.couchdb : undefined;
  if (couch && !options.store) {
    const awaited = { what: 'CouchDB store', key: 'store.couchdb.url', where: `${redactUrl(couch.url)}/${couch.db}` };
    // An open cut short (CouchDB went away half way, or an attempt that got no answer) is closed
    // before the next attempt: no changes feed of it stays behind.
    const attempt = async (): Promise<void> => {
      try {
        await store.open();
      } catch (err) {
        await store.close().catch(() => undefined);
        throw err;
      }
    };
    try {
      await untilReachable(awaited, attempt, { log, unreachable: (err) => err instanceof CouchStoreError && err.unreachable, ...(options.signal ? { signal: options.signal } : {}) });
    } catch (err) {
      await store.close().catch(() => undefined); // an attempt left unanswered may still open it
      // A CouchDB that answers and refuses (credentials, rights) is a config error: restarting
      // will not fix it (exit 2, not restarted by deploy/hermod.service).
      if (err instanceof CouchStoreError && !err.unreachable) throw new ConfigError(`store.couchdb: ${err.message}`);
      throw err;
    }
  } else await store.open();
  stack.push('store', () => store.close());

  // Several Hermods may share a CouchDB store (src/cluster/cluster.ts): one holds the work lease
  // (timers, replication sources, adopting a dead member's journal). Stopped after the journal.
  const journalSpace = store.state(JOURNAL_SPACE);
  const relaySpace = store.state(RELAY_SPACE);
  let adopt: (member: string) => Promise<void> = async () => undefined;
  let sweep: (liveTags: ReadonlySet<string>) => Promise<void> = async () => undefined;
  const cluster = new Cluster({
    store,
    jid: component.jid,
    shared: config.store.backend === 'couchdb',
    ttlMs: config.cluster.leaseSeconds * 1000,
    log: log.child({ component: 'cluster' }),
    leftovers: () => NotificationJournal.members(journalSpace),
    adopt: (member) => adopt(member),
    sweep: (liveTags) => sweep(liveTags),
    onFenced: () => {
      log.error('exiting: another process has taken over this one\'s notifications (restart it: it joins as a new member)');
      process.exit(75);
    },
  });
  stack.push('cluster membership', () => cluster.stop());
  await cluster.register(); // its heartbeat before its journal (see Cluster.register)

  // Durable fan-out (src/component/notification-queue.ts): the journal records each event before
  // the request is answered; the outbox writes, confirms by barrier and rewinds on reconnect.
  const { journal, undelivered } = await NotificationJournal.open(journalSpace, cluster.member, log, { legacyDir: config.dataDir, ...(options.signal ? { signal: options.signal } : {}) }).catch((err: unknown) => {
    // SIGTERM while the store refused the journal's opening writes: a clean stop, as in untilReachable.
    throw options.signal?.aborted ? new StartAborted() : err;
  });
  stack.push('notification journal', () => journal.close());
  let relay: Relay | undefined;
  const outbox: Outbox = new Outbox({
    log,
    barrierJid: component.jid,
    barrierTag: cluster.tag,
    relay: (stanza) => relay?.route(stanza) ?? false,
    onConfirmed: (tag) => journal.confirm(tag),
    onDropped: (tags) => journal.dropped(tags),
    onRouted: (tag) => journal.routed(tag),
    onRewound: () => journal.rewound(),
  });
  const renderer = new NotificationRenderer(component.jid);
  const notifications = new NotificationQueue(outbox, journal, (event, recipients) => renderer.render(event, recipients));
  const restore = (events: typeof undelivered, from: string): void => {
    const restored = notifications.restore(events);
    if (restored > 0) log.info('undelivered notifications queued from the journal', { stanzas: restored, events: events.length, from });
  };
  restore(undelivered, cluster.member);

  const metrics = new HermodMetrics({ outbox: () => outbox, ...(options.store ? {} : { storeSize: () => storeSize(config) }) });
  const connection = options.link?.(outbox) ?? new ComponentConnection({ jid: component.jid, secret: component.secret, server: component.server, log, outbox });
  const iq = new IqCaller(component.jid, (stanza) => connection.send(stanza), cluster.tag);
  stack.push('requests the component sent', () => iq.cancelAll());
  if (cluster.tag) {
    // Replies ejabberd delivers to another process come back through the store (src/cluster/relay.ts).
    const live = new Relay({
      space: relaySpace,
      tag: cluster.tag,
      deliver: (stanza) => void (outbox.acknowledge(stanza) || iq.handleResponse(stanza)),
      waiting: () => iq.pendingCount > 0 || outbox.inFlight > 0,
      isLeader: () => cluster.isLeader(),
      send: (stanza) => connection.send(stanza),
      log: log.child({ component: 'relay' }),
    });
    relay = live;
    stack.push('reply relay', () => live.stop());
  }
  adopt = async (member) => {
    restore(await journal.adopt(member), member);
    await relay?.drop(member.slice(-6));
  };
  sweep = async (liveTags) => void (await relay?.sweep(liveTags));

  const creatorDomains = new Set(config.pubsub.creatorDomains ?? [parentDomain(component.jid)]);
  // XEP-0356: the attached server's domains may grant roster/presence access (src/xmpp/privilege.ts).
  const privileges = new Privileges({ serverDomains: [parentDomain(component.jid), ...creatorDomains], iq, log: log.child({ component: 'privilege' }) });
  const presence = new PresenceTracker();
  const service = new PubsubService({
    rosters: privileges,
    presence,
    store,
    // The component itself publishes for its sources: it is an admin of its own service, and so
    // exempt from the node quota and the publish rate.
    admins: [...config.pubsub.admins, component.jid],
    limits: config.limits,
    onError: (err) => log.error('background pub/sub work failed (item expiry, lease end or roster read)', { reason: String(err) }),
    runsTimers: () => cluster.isLeader(),
    reservedNodeIds: COMMAND_NODES,
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
  stack.push('pub/sub service', () => service.close());
  const quarantine = new Quarantine(store.state(QUARANTINE_SPACE), { legacyDir: config.dataDir, log });
  return { signingSecret: component.secret, store, service, connection, outbox, iq, privileges, presence, metrics, cluster, journal, relay, quarantine, notifications };
}

/**
 * Re-arms item-expiry and lease timers from the store's timer index, in the background: called
 * once the connection has started, so a large store does not delay serving (reads meanwhile
 * leave out items already past their expiry). Unwinding waits for it before the service closes.
 */
export function restoreTimers(stack: StopStack, core: Core, log: Logger): void {
  // Only the work-lease holder runs timers: restored whenever this process becomes it, and, while
  // other members publish too, re-read every lease period (their publications arm no timer here).
  let restoring: Promise<void> = Promise.resolve();
  let busy = false;
  const restore = (): void => {
    if (busy) return; // a rescan still under way covers this one: the chain never grows
    busy = true;
    restoring = restoring
      .then(() => core.service.start())
      .catch((err: unknown) => log.error('item expiry and lease timers could not be restored', { reason: String(err) }))
      .finally(() => (busy = false));
  };
  let rescan: NodeJS.Timeout | undefined;
  core.cluster.onLeadership((leader) => {
    clearInterval(rescan);
    if (!leader) return;
    restore();
    if (core.cluster.tag) {
      rescan = setInterval(restore, core.cluster.ttlMs);
      rescan.unref();
    }
  });
  stack.push('timer restore', async () => {
    clearInterval(rescan);
    await restoring;
  });
}

/** Joins the cluster (first try for the work lease): call once everything that adopts or restores is built. Rejects with the store's error. */
export function joinCluster(core: Core): Promise<void> {
  return core.cluster.start();
}
