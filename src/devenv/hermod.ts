// Hermod as a process, for end-to-end tests and benchmarks: writes its config file, runs the
// real `hermod start` (bin/hermod.js) as a tracked child (process.ts) with its output in a log
// file, waits for the component to come online (from its JSON log), and stops it by PID (SIGTERM,
// or SIGKILL for crash tests). Also `hermod ARGS` run to completion (check, status, migrate).

import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually, sleep, spawnChild, type Child } from './process.ts';
import { HERMOD_ENV } from '../ops/heap.ts';
import type { ClusterStatus } from '../cluster/cluster.ts';
import type { ServerInfo } from './xmpp-server.ts';

const BIN = fileURLToPath(new URL('../../bin/hermod.js', import.meta.url));
const REPO = path.dirname(path.dirname(BIN));

export interface HermodProcessOptions {
  /** The server Hermod attaches to as its main component (JID, secret, component address). */
  server: Pick<ServerInfo, 'componentJid' | 'componentSecret' | 'componentService'>;
  /** Where the config (`<name>.json`), the log (`<name>.log`) and by default the data go. */
  dir: string;
  /** Default "hermod". */
  name?: string;
  /** `pubsub.admins` (bare JIDs). */
  admins?: string[];
  /** Default `./<name>-data` (relative to the config file, so under `dir`). */
  dataDir?: string;
  /** `log.level`; default "debug". */
  logLevel?: string;
  /** More config keys (e.g. appDb, ajatus, limits), merged over the ones above. */
  extra?: Record<string, unknown>;
  /** Write a V8 CPU profile into this folder at exit. */
  cpuProfDir?: string;
  /** Node/V8 options given before bin/hermod.js (e.g. `--max-semi-space-size=8`). */
  nodeArgs?: string[];
  /** Wait until the log says "component online" (default true). */
  waitOnline?: boolean;
  /** How long to wait for that, in ms (default 20 000). */
  timeoutMs?: number;
  /** How long `stop()` waits after SIGTERM before SIGKILL, in ms (default 10 000). */
  stopTimeoutMs?: number;
}

export interface HermodProcess extends Child {
  configFile: string;
  /** Lines of the JSON log so far (the log file goes on across restarts of the same name). */
  log(): Promise<Array<Record<string, unknown>>>;
  /** Resolves to the first log line that matches; throws if Hermod exits or after `timeoutMs` (default 15 s). */
  waitForLog(match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** Writes `<dir>/<name>.json` for a Hermod attached to `server`; resolves to its path. */
export async function writeHermodConfig(o: HermodProcessOptions): Promise<string> {
  const name = o.name ?? 'hermod';
  const config = {
    component: { jid: o.server.componentJid, secret: o.server.componentSecret, server: o.server.componentService },
    dataDir: o.dataDir ?? `./${name}-data`,
    pubsub: { admins: o.admins ?? [] },
    log: { level: o.logLevel ?? 'debug' },
    ...o.extra,
  };
  const file = path.join(o.dir, `${name}.json`);
  await writeFile(file, JSON.stringify(config, null, 2));
  return file;
}

/** Runs `hermod ARGS` to completion (bounded: 30 s). */
export function hermodCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function readLog(logFile: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const isOnline = (l: Record<string, unknown>): boolean => l.msg === 'component online';

/**
 * Starts `hermod start` with the config of `o` and (unless `waitOnline` is false) resolves once
 * its log says the component is online. Throws with the log if it exits first or is not online
 * within `timeoutMs` (then it is killed: nothing that did not come up is left behind).
 */
export async function startHermodProcess(o: HermodProcessOptions): Promise<HermodProcess> {
  const name = o.name ?? 'hermod';
  const configFile = await writeHermodConfig(o);
  const logFile = path.join(o.dir, `${name}.log`);
  const onlineBefore = (await readLog(logFile)).filter(isOnline).length;
  // With the environment deploy/hermod.service gives it (src/ops/heap.ts), under the caller's
  // (an operator's own MALLOC_ARENA_MAX wins).
  const args = [...(o.nodeArgs ?? []), ...(o.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', o.cpuProfDir] : []), BIN, 'start', '--config', configFile];
  const env = { ...HERMOD_ENV, ...process.env };
  const child = spawnChild(process.execPath, args, { name, logFile, cwd: REPO, env, ...(o.stopTimeoutMs ? { stopTimeoutMs: o.stopTimeoutMs } : {}) });
  const log = (): Promise<Array<Record<string, unknown>>> => readLog(logFile);
  const alive = async (): Promise<void> => {
    if (child.exited()) throw new Error(`${name} exited with ${child.process.exitCode ?? child.process.signalCode}; log:\n${(await readFile(logFile, 'utf8')).slice(-3000)}`);
  };
  const handle: HermodProcess = {
    ...child,
    configFile,
    log,
    waitForLog: (match, what, timeoutMs = 15_000) =>
      eventually(async () => {
        await alive();
        return (await log()).find(match);
      }, what, timeoutMs),
  };
  const timeoutMs = o.timeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  try {
    while ((o.waitOnline ?? true) && (await log()).filter(isOnline).length <= onlineBefore) {
      await alive();
      if (Date.now() > deadline) throw new Error(`${name} not online within ${timeoutMs} ms; log:\n${(await readFile(logFile, 'utf8')).slice(-3000)}`);
      await sleep(25);
    }
  } catch (err) {
    await child.kill();
    throw err;
  }
  return handle;
}

/** The cluster part of `hermod status --json` of a running Hermod (undefined when it does not answer). */
export async function clusterStatusOf(h: Pick<HermodProcess, 'configFile'>): Promise<ClusterStatus | undefined> {
  const r = await hermodCli('status', '--config', h.configFile, '--json');
  return r.code === 0 ? (JSON.parse(r.stdout) as { cluster?: ClusterStatus }).cluster : undefined;
}
