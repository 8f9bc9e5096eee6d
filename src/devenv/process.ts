// Process control for the development environment (tests, the demo, benchmarks): spawn and track
// children, stop them by PID (SIGTERM, bounded wait, SIGKILL) — also when a test fails or the
// process dies of a signal —, wait for a port or a condition, run a command to completion, tail a
// log. Used by the XMPP servers (prosody.ts, ejabberd.ts), pouchdb-server (couchdb.ts), the
// dbus-daemon (dbus.ts), Hermod as a process (hermod.ts) and the benchmark's children.
//
// Nothing here ever signals by name: only PIDs we spawned (or read from a pidfile we asked for),
// never 0, 1 or -1; a negative PID only for a process group we created.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

const STOP_TIMEOUT_MS = 10_000;
const KILL_TIMEOUT_MS = 3_000;
const CMD_TIMEOUT_MS = 30_000;
const LOG_TAIL_LINES = 20;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True if the process exists and is not a zombie (kill(pid, 0) alone says yes for zombies). */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
}

/** Sends `sig` to `pid` (negative: a process group we created); ignores 0/1/-1 and gone processes. */
export function signal(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined || pid === 0 || pid === 1 || pid === -1) return;
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

async function waitDead(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await sleep(25);
  }
  return !isAlive(pid);
}

/** SIGTERM, wait up to `ms`, SIGKILL, wait. Resolves true if the process is gone. */
export async function terminate(pid: number, ms = STOP_TIMEOUT_MS): Promise<boolean> {
  if (!isAlive(pid)) return true;
  signal(pid, 'SIGTERM');
  if (await waitDead(pid, ms)) return true;
  signal(pid, 'SIGKILL');
  return waitDead(pid, KILL_TIMEOUT_MS);
}

/** The last `lines` lines of a log file, headed with its name (for error messages). */
export function tail(file: string, lines = LOG_TAIL_LINES): string {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd();
    if (!text) return `--- ${file}: (empty) ---`;
    const all = text.split('\n');
    return `--- ${file} (last ${Math.min(lines, all.length)} lines) ---\n${all.slice(-lines).join('\n')}`;
  } catch {
    return `--- ${file}: (missing) ---`;
  }
}

/** True if something accepts a TCP connection on host:port within `ms` milliseconds. */
export function tryConnect(host: string, port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/**
 * Waits until every port accepts on `host`. `dead()` is asked between rounds: a string (why the
 * process is gone) ends the wait with that reason. Resolves to the ports still closed at the
 * deadline (empty: all open), or throws Error(reason) when `dead` says so.
 */
export async function waitForPorts(host: string, ports: readonly number[], timeoutMs: number, dead: () => string | undefined = () => undefined): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let pending = [...ports];
  while (Date.now() < deadline) {
    const reason = dead();
    if (reason) throw new Error(reason);
    const ok = await Promise.all(pending.map((p) => tryConnect(host, p, 500)));
    pending = pending.filter((_, i) => !ok[i]);
    if (pending.length === 0) return [];
    await sleep(50);
  }
  return pending;
}

/** A TCP port free on `host` right now (the OS picks it). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Polls `check` (every 100 ms) until it returns a truthy value, which it resolves to. A check
 * that throws counts as "not yet"; after `timeoutMs` it throws naming `what` and the last error.
 */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(100);
  }
}

/** The message for a command that could not be spawned (ENOENT: not installed). */
export function spawnFailure(cmd: string, err: Error): string {
  return (err as NodeJS.ErrnoException).code === 'ENOENT'
    ? `${cmd}: command not found: install the system packages of deploy/system-packages.txt (node src/devenv/preflight.js does it as root)`
    : `${cmd}: cannot run: ${err.message}`;
}

export interface CmdResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** stdout and stderr as they came. */
  output: string;
}

/** Runs a command in its own process group; on timeout kills that group (by its id) and throws. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<CmdResult> {
  const timeoutMs = opts.timeoutMs ?? CMD_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd });
    let output = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      output += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) signal(-child.pid, 'SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms; output:\n${output}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(spawnFailure(cmd, err)));
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig, stdout, output });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// emergency cleanup: when the process exits or dies of a signal, before anyone could stop things

const cleanups = new Set<() => void>();

function onExit(): void {
  for (const fn of [...cleanups]) {
    try {
      fn();
    } catch {
      /* best effort */
    }
  }
}
function onSignal(sig: NodeJS.Signals): void {
  onExit();
  uninstallHandlers();
  // Re-raise so the process still dies of the signal unless someone else handles it.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}
const sigHandlers = new Map<NodeJS.Signals, () => void>();
function installHandlers(): void {
  if (sigHandlers.size) return;
  process.on('exit', onExit);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]) {
    const h = () => onSignal(sig);
    sigHandlers.set(sig, h);
    process.on(sig, h);
  }
}
function uninstallHandlers(): void {
  process.off('exit', onExit);
  for (const [sig, h] of sigHandlers) process.off(sig, h);
  sigHandlers.clear();
}

/**
 * Registers a synchronous last-resort cleanup (SIGKILL by PID, remove a temp dir), run if this
 * process exits or gets SIGINT/SIGTERM/SIGHUP first. Returns the function that unregisters it.
 */
export function atEmergencyExit(fn: () => void): () => void {
  cleanups.add(fn);
  installHandlers();
  return () => {
    cleanups.delete(fn);
    if (cleanups.size === 0) uninstallHandlers();
  };
}

const running = new Set<ChildProcess>();
let killingChildrenAtExit = false;

/** SIGKILLs every tracked child still running (by PID); for exits that cannot wait. */
export function killAllNow(): void {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

// ---------------------------------------------------------------------------------------------
// tracked children

export interface Child {
  pid: number;
  name: string;
  /** Where its stdout and stderr go (unless the caller reads stdout itself). */
  logFile: string;
  /** performance.now() when it was spawned. */
  startedAt: number;
  exited(): boolean;
  /** Resolves to the exit code (null after a signal) once it has exited. */
  readonly exit: Promise<number | null>;
  /**
   * SIGTERM and wait up to `timeoutMs`; resolves to the exit code. If it does not exit: SIGKILL,
   * and throws Error naming the child (a clean stop was expected).
   */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL (a crash), resolves once it has exited. */
  kill(): Promise<void>;
  /** The underlying ChildProcess (for its stdout when spawned with `stdout: 'pipe'`). */
  readonly process: ChildProcess;
}

export interface SpawnChildOptions {
  name: string;
  /** stdout and stderr are appended here; with `stdout: 'pipe'` only stderr, stdout is the caller's. */
  logFile: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  stdout?: 'log' | 'pipe';
  /** How long `stop()` waits after SIGTERM by default, in ms (default 10 000). */
  stopTimeoutMs?: number;
}

/**
 * Spawns `cmd args` as a tracked child: SIGKILLed by PID if this process exits first, its output
 * appended to `logFile`. Throws if it cannot be spawned.
 */
export function spawnChild(cmd: string, args: string[], o: SpawnChildOptions): Child {
  const out = fs.openSync(o.logFile, 'a');
  const options: SpawnOptions = { stdio: ['ignore', o.stdout === 'pipe' ? 'pipe' : out, out], ...(o.cwd ? { cwd: o.cwd } : {}), ...(o.env ? { env: o.env } : {}) };
  const startedAt = performance.now();
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, options);
  } finally {
    fs.closeSync(out);
  }
  if (child.pid === undefined) throw new Error(`${o.name}: ${cmd} could not be spawned`);
  running.add(child);
  if (!killingChildrenAtExit) {
    atEmergencyExit(killAllNow);
    killingChildrenAtExit = true;
  }
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exit.then(() => running.delete(child));
  const exited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  return {
    pid: child.pid,
    name: o.name,
    logFile: o.logFile,
    startedAt,
    exited,
    exit,
    process: child,
    async stop(timeoutMs = o.stopTimeoutMs ?? STOP_TIMEOUT_MS) {
      if (!exited()) child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exit, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)))]);
      clearTimeout(timer);
      if (code !== 'timeout') return code;
      child.kill('SIGKILL');
      await Promise.race([exit, sleep(KILL_TIMEOUT_MS)]);
      throw new Error(`${o.name} (pid ${child.pid}) did not stop within ${timeoutMs} ms of SIGTERM; killed`);
    },
    async kill() {
      if (!exited()) child.kill('SIGKILL');
      await exit;
    },
  };
}
