// The `hermod` command: parses arguments and runs a subcommand. Returns the exit code; never
// calls process.exit itself, so it can run inside tests.

import { parseArgs } from 'node:util';
import { ConfigError, configKeys, configNotes, loadConfig } from '../config/config.ts';
import { keyHelp } from '../config/schema-kit.ts';
import { startHermod } from '../hermod.ts';
import { StartAborted } from '../app/wait-for.ts';
import { createLogger, LOG_LEVELS, type LogLevel } from '../log.ts';
import { VERSION } from '../version.ts';

/** The --help text; the config keys come from the config schema. */
export const help = (): string => `hermod ${VERSION} — XMPP publish/subscribe replication service (XEP-0114 component, XEP-0060)

Usage:
  hermod start --config FILE [--log-level LEVEL]   run the service
  hermod demo [--no-install]                       run a local demo: two sites replicating Ajatus notes
                                                   (and a Midgard article, through XSLT) over XMPP
                                                   (as root; first installs the missing system
                                                   packages with apt-get unless --no-install or
                                                   HERMOD_NO_INSTALL=1: then exits 2 naming them)
  hermod check --config FILE                       validate the config, open the store, try the
                                                   component handshake; exit 1 naming what fails
  hermod status --config FILE [--json]             ask the running instance (unix socket
                                                   DATADIR/hermod.sock): connection, nodes,
                                                   subscriptions, queue depths
  hermod quarantine list|show ID|retry ID|all|drop ID|all --config FILE [--json]
                                                   leaves whose transform failed: list them,
                                                   show one, have the running Hermod try again
                                                   (with the stylesheet as it is now), drop
  hermod migrate --from level --to couchdb --config FILE
                                                   copy the whole store into an empty one
                                                   (Hermod stopped; also couchdb -> level)
  hermod --help | --version

start
  Connects to the XMPP server as the component in the config file and serves pub/sub on its
  JID until SIGINT/SIGTERM (then answers requests under way, flushes notifications, closes the
  stream and the store). Reconnects with backoff when the server goes away, and keeps trying
  when it is not there at start (the first failure is logged at error level, naming
  component.server and the address). Waits the same way for a CouchDB that does not answer yet
  at start (appDb.url, store.couchdb.url); one that refuses (credentials, no such database)
  is a config error.

Options:
  -c, --config FILE      JSON config file (see below)
  -l, --log-level LEVEL  ${LOG_LEVELS.join(' | ')} (overrides log.level; default info)
  -h, --help             this text
  -v, --version          print the version

Config file (JSON; relative paths are resolved against the file's folder), key = default:
${keyHelp(configKeys())}

Logs are JSON lines on stderr. Exit codes: 0 clean stop, 1 runtime failure, 2 usage or config error,
75 fenced (several Hermods on one CouchDB store: another took over; systemd restarts it).
`;

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        'log-level': { type: 'string', short: 'l' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        json: { type: 'boolean' },
        from: { type: 'string' },
        to: { type: 'string' },
        'no-install': { type: 'boolean' },
      },
    });
  } catch (err) {
    process.stderr.write(`hermod: ${(err as Error).message}\nTry 'hermod --help'.\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(help());
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const [command, ...rest] = positionals;
  if (values['no-install'] && command !== 'demo') {
    process.stderr.write(`hermod: --no-install applies to 'hermod demo' only\nTry 'hermod --help'.\n`);
    return 2;
  }
  if (command === 'quarantine') return (await import('./quarantine.ts')).quarantine(values.config, rest, values.json ?? false);
  if (rest.length > 0) {
    process.stderr.write(`hermod: unexpected argument '${rest[0]}'\nTry 'hermod --help'.\n`);
    return 2;
  }
  switch (command) {
    case 'start':
      (await import('../ops/heap.ts')).boundHeapGrowth();
      return start(values.config, values['log-level']);
    case 'check':
      return (await import('./ops.ts')).check(values.config);
    case 'status':
      return (await import('./ops.ts')).status(values.config, values.json ?? false);
    case 'migrate':
      return (await import('./ops.ts')).migrate(values.config, values.from, values.to);
    case 'demo': {
      const { runDemo } = await import('./demo.ts');
      return runDemo({ noInstall: values['no-install'] ?? false });
    }
    case undefined:
      process.stderr.write(help());
      return 2;
    default:
      process.stderr.write(`hermod: unknown command '${command}'\nTry 'hermod --help'.\n`);
      return 2;
  }
}

async function start(configFile: string | undefined, logLevel: string | undefined): Promise<number> {
  if (!configFile) {
    process.stderr.write('hermod start: --config FILE is required\n');
    return 2;
  }
  if (logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    process.stderr.write(`hermod start: --log-level must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'\n`);
    return 2;
  }
  let config;
  try {
    config = await loadConfig(configFile);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`hermod: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger((logLevel as LogLevel | undefined) ?? config.log.level);
  for (const note of configNotes(config)) log.warn(note);
  // Signals are heard from the start: start-up may wait for a CouchDB that is not up yet.
  const stopping = new AbortController();
  let onSignal: (signal: string) => void = () => undefined;
  const signalled = new Promise<void>((resolve) => {
    onSignal = (signal: string): void => {
      log.info('signal received', { signal });
      unlisten();
      stopping.abort();
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  function unlisten(): void {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  let hermod;
  try {
    hermod = await startHermod(config, { log, signal: stopping.signal });
  } catch (err) {
    unlisten();
    // A CouchDB request left unanswered (a server that accepted and went quiet) may keep the
    // event loop alive: exit after 2 s all the same (the timer itself holds nothing open).
    setTimeout(() => process.exit(process.exitCode ?? 1), 2_000).unref();
    if (err instanceof StartAborted) return 0; // stopped while waiting: nothing was started
    if (err instanceof ConfigError) {
      process.stderr.write(`hermod: ${err.message}\n`);
      return 2;
    }
    // Not a config error, and start-up did not get through (e.g. a CouchDB store that refuses
    // the database): one line, not a stack trace; status 1, so that systemd tries again.
    process.stderr.write(`hermod: ${err instanceof Error ? err.message : String(err)}\n`);
    log.debug('start-up failed', { stack: err instanceof Error ? err.stack : undefined });
    return 1;
  }
  log.info('hermod started', { jid: hermod.jid, dataDir: config.dataDir, version: VERSION });
  await signalled;
  await hermod.stop();
  return 0;
}
