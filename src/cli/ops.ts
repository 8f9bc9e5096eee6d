// Operations subcommands: `hermod check` (config, store, XMPP handshake), `hermod status`
// (asks the running instance over its unix socket) and `hermod migrate` (copies the store
// between backends). Each returns an exit code: 0 fine, 1 a check or the command failed,
// 2 usage or config error. Output names places without credentials.

import { mkdir } from 'node:fs/promises';
import nano from 'nano';
import { checkHandshake } from '../component/connection.ts';
import { ConfigError, configNotes, loadConfig, type HermodConfig } from '../config/config.ts';
import { silentLogger } from '../log.ts';
import type { ClusterStatus } from '../cluster/cluster.ts';
import { askStatus, type StatusReport } from '../ops/status.ts';
import { AppSettings } from '../replication/settings.ts';
import { BACKENDS, backendKv, createStore, describeBackend, type Backend } from '../store/backends.ts';
import { describeCouchFailure } from '../store/couch-answers.ts';
import { copyStore } from '../store/migrate.ts';

const out = (line: string): void => void process.stdout.write(`${line}\n`);
const err = (line: string): void => void process.stderr.write(`${line}\n`);

export async function configOrExit(command: string, file: string | undefined): Promise<HermodConfig | number> {
  if (!file) {
    err(`hermod ${command}: --config FILE is required`);
    return 2;
  }
  try {
    return await loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`hermod: ${e.message}`);
      return 2;
    }
    throw e;
  }
}

const reason = (e: unknown): string => (e instanceof Error ? e.message : String(e));
/** "<where>: <why>", once (CouchDB store errors already name the database). */
const failure = (where: string, e: unknown): string => (reason(e).startsWith(where) ? reason(e) : `${where}: ${reason(e)}`);

export async function check(file: string | undefined): Promise<number> {
  const config = await configOrExit('check', file);
  if (typeof config === 'number') return config;
  out(`ok    config   ${file}`);
  for (const note of configNotes(config)) out(`note  config   ${note}`);
  const running = await askStatus(config.dataDir, 2_000).catch(() => undefined);
  if (running) {
    // A second component connection would compete with (or replace) the running one.
    out(`ok    store    in use by the running Hermod (pid ${running.pid}): ${running.store}, ${running.nodes} nodes`);
    if (running.connection !== 'online') {
      err(`FAIL  xmpp     the running Hermod (pid ${running.pid}) is ${running.connection}, not online`);
      return 1;
    }
    out(`ok    xmpp     the running Hermod (pid ${running.pid}) is online as ${running.jid}`);
    return 0;
  }
  const store = createStore(config);
  try {
    await mkdir(config.dataDir, { recursive: true });
    await store.open();
    const nodes = (await store.pageNodes({ max: 0 })).count;
    await store.close();
    out(`ok    store    ${describeBackend(config.store.backend, config)}: ${nodes} nodes`);
  } catch (e) {
    err(`FAIL  store    ${failure(describeBackend(config.store.backend, config), e)}`);
    return 1;
  }
  let component = config.component;
  if (config.appDb) {
    // Replication needs both databases: the settings one, and the content it publishes and writes.
    const server = nano(config.appDb.url);
    const settings = new AppSettings(server.use(config.appDb.db), silentLogger);
    try {
      await settings.start();
      component ??= await settings.credentials();
    } catch (e) {
      err(`FAIL  appDb    cannot read '${config.appDb.db}': ${describeCouchFailure(e, { key: 'appDb.url', dbKey: 'appDb.db' })}`);
      return 1;
    } finally {
      settings.stop();
    }
    if (!component) {
      err(`FAIL  appDb    no hermod:credentials document in '${config.appDb.db}' and no component in the config file`);
      return 1;
    }
    try {
      const info = await server.use(config.ajatus.contentDb).info();
      out(`ok    appDb    '${config.appDb.db}' readable; content database '${config.ajatus.contentDb}': ${info.doc_count} documents`);
    } catch (e) {
      const missing = (e as { statusCode?: number }).statusCode === 404;
      err(`FAIL  appDb    content database '${config.ajatus.contentDb}': ${missing ? 'does not exist (create it, or set ajatus.contentDb)' : describeCouchFailure(e, { key: 'appDb.url' })}`);
      return 1;
    }
  }
  if (!component) return 2; // validateConfig guarantees one or the other
  try {
    await checkHandshake(component);
    out(`ok    xmpp     handshake with ${component.server} as ${component.jid}`);
    return 0;
  } catch (e) {
    err(`FAIL  xmpp     ${component.server} as ${component.jid}: ${reason(e)}`);
    return 1;
  }
}

export function formatStatus(s: StatusReport): string {
  return [
    `hermod ${s.version} (pid ${s.pid}, up ${s.uptimeSeconds} s) as ${s.jid}`,
    `connection      ${s.connection}`,
    `store           ${s.store}`,
    `nodes           ${s.nodes}`,
    `subscriptions   ${s.subscriptions}`,
    `outbox          ${s.queues.outboxPending} pending, ${s.queues.notificationsSent} sent, ${s.queues.notificationsDropped} dropped`,
    `requests        ${s.queues.requestsInFlight} in flight, ${s.queues.requestsRefusedBusy} refused (too many under way)`,
    `bounces         ${s.bounces.tracked} JIDs bouncing, ${s.bounces.unsubscribed} subscriptions removed`,
    ...(s.cluster ? formatCluster(s.cluster) : []),
  ].join('\n');
}

/** The cluster lines of `hermod status`: this member, every member's heartbeat, each lease's holder. */
function formatCluster(c: ClusterStatus): string[] {
  return [
    `cluster member  ${c.member}${c.shared ? ` (shared store, lease ${c.ttlMs / 1000} s)` : ' (store of this process only)'}`,
    ...c.members.map((m) => `  member        ${m.id} ${m.host} pid ${m.pid}${m.self ? ' (this one)' : ''} ${m.alive ? 'alive' : 'not beating'}${m.lastBeatAgoMs !== undefined && !m.self ? `, changed ${m.lastBeatAgoMs} ms ago` : ''}`),
    ...c.leases.map((l) => `  lease ${l.name.padEnd(8)}held by ${l.holder ?? 'nobody'}${l.term !== undefined ? ` (term ${l.term})` : ''}${l.heldHere ? ' = this one' : ''}`),
  ];
}

export async function status(file: string | undefined, json: boolean): Promise<number> {
  const config = await configOrExit('status', file);
  if (typeof config === 'number') return config;
  try {
    const report = await askStatus(config.dataDir);
    out(json ? JSON.stringify(report, null, 2) : formatStatus(report));
    return 0;
  } catch (e) {
    err(`hermod status: ${reason(e)}`);
    return 1;
  }
}

export async function migrate(file: string | undefined, from: string | undefined, to: string | undefined): Promise<number> {
  const isBackend = (b: string | undefined): b is Backend => (BACKENDS as readonly string[]).includes(b ?? '');
  if (!isBackend(from) || !isBackend(to) || from === to) {
    err(`hermod migrate: --from and --to must be two different backends of ${BACKENDS.join(', ')} (e.g. --from level --to couchdb)`);
    return 2;
  }
  const config = await configOrExit('migrate', file);
  if (typeof config === 'number') return config;
  let source;
  let target;
  try {
    source = backendKv(from, config);
    target = backendKv(to, config);
  } catch (e) {
    err(`hermod: ${reason(e)}`);
    return 2;
  }
  const where = (b: Backend): string => describeBackend(b, config);
  try {
    await mkdir(config.dataDir, { recursive: true });
    await source.open();
  } catch (e) {
    err(`hermod migrate: cannot open the source, ${failure(where(from), e)}${from === 'level' ? ' (is Hermod running? stop it first)' : ''}`);
    return 1;
  }
  try {
    await target.open();
  } catch (e) {
    await source.close();
    err(`hermod migrate: cannot open the target, ${failure(where(to), e)}`);
    return 1;
  }
  try {
    out(`copying ${where(from)} -> ${where(to)}`);
    const copied = await copyStore(source, target, (n) => n % 10_000 === 0 && out(`  ${n} entries`));
    out(`done: ${copied} entries copied; ${config.store.backend === to ? 'store.backend is already' : 'set store.backend to'} "${to}": start Hermod`);
    return 0;
  } catch (e) {
    err(`hermod migrate: ${reason(e)}`);
    return 1;
  } finally {
    await source.close();
    await target.close();
  }
}
