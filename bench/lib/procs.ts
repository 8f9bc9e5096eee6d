// Child processes of the benchmark (Hermod via `bin/hermod.js start`, the ceiling component,
// the store filler) and /proc readings (CPU time, RSS). Every child is stopped by its PID:
// SIGTERM, bounded wait, SIGKILL; and SIGKILLed by PID if the benchmark itself exits early.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HERMOD_BIN = path.join(REPO, 'bin', 'hermod.js');
const running = new Set<ChildProcess>();
/** SIGKILLs every child still running (by PID); for exits that cannot wait. */
export function killAllNow(): void {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
process.on('exit', killAllNow);

export interface Proc {
  pid: number;
  name: string;
  logFile: string;
  /** SIGTERM and wait (bounded); SIGKILL if it does not exit. Resolves to the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  exited(): boolean;
}

function track(child: ChildProcess, name: string, logFile: string): Proc {
  running.add(child);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exit.then(() => running.delete(child));
  return {
    pid: child.pid as number,
    name,
    logFile,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    async stop(timeoutMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exit, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)))]);
      clearTimeout(timer);
      if (code !== 'timeout') return code;
      child.kill('SIGKILL');
      await Promise.race([exit, new Promise((r) => setTimeout(r, 3000))]);
      return null;
    },
  };
}

export interface HermodSpawn {
  name: string;
  dir: string;
  jid: string;
  secret: string;
  server: string;
  dataDir: string;
  /** Write a V8 CPU profile into this folder at exit. */
  cpuProfDir?: string;
  admins?: string[];
  /** More config keys (e.g. appDb, ajatus), merged over the defaults. */
  extra?: Record<string, unknown>;
}

/** The spawn settings of a Hermod attached to `server` as its main component, data under `dir/<name>-data`. */
export function hermodSpawnFor(server: { componentJid: string; componentSecret: string; componentService: string }, name: string, dir: string): HermodSpawn {
  return { name, dir, jid: server.componentJid, secret: server.componentSecret, server: server.componentService, dataDir: path.join(dir, `${name}-data`) };
}

/** Starts `hermod start` and resolves once its log says the component is online. */
export async function startHermodProcess(o: HermodSpawn, timeoutMs = 30_000, waitOnline = true): Promise<Proc & { startedAt: number }> {
  const config = {
    component: { jid: o.jid, secret: o.secret, server: o.server },
    dataDir: o.dataDir,
    pubsub: { admins: o.admins ?? [] },
    log: { level: 'info' },
    // The peers have no publish rate limit: neither has Hermod here (the load is the point).
    limits: { publishRate: false },
    ...o.extra,
  };
  const configFile = path.join(o.dir, `${o.name}.json`);
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const logFile = path.join(o.dir, `${o.name}.log`);
  const out = createWriteStream(logFile, { flags: 'a' });
  const args = [
    ...(o.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', o.cpuProfDir] : []),
    HERMOD_BIN,
    'start',
    '--config',
    configFile,
  ];
  const startedAt = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO });
  child.stdout?.pipe(out, { end: false });
  child.stderr?.pipe(out, { end: false });
  const proc = track(child, o.name, logFile);
  const deadline = Date.now() + timeoutMs;
  for (; waitOnline; ) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    if (text.includes('"component online"')) break;
    if (proc.exited()) throw new Error(`${o.name} exited early; log:\n${text.slice(-3000)}`);
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`${o.name} not online within ${timeoutMs} ms; log:\n${text.slice(-3000)}`);
    }
    await sleep(25);
  }
  return { ...proc, startedAt };
}

/** Starts a TypeScript script of the benchmark as a process; resolves on its first stdout JSON line. */
export async function startScript(
  name: string,
  script: string,
  args: string[],
  dir: string,
  timeoutMs = 30_000,
): Promise<Proc & { first: Record<string, unknown>; lines: Array<Record<string, unknown>> }> {
  const logFile = path.join(dir, `${name}.log`);
  const out = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'bench', script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: REPO,
  });
  child.stderr?.pipe(out, { end: false });
  const proc = track(child, name, logFile);
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  let wake: (() => void) | undefined;
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        out.write(`${line}\n`);
      }
      wake?.();
    }
  });
  child.once('exit', () => wake?.());
  const deadline = Date.now() + timeoutMs;
  while (lines.length === 0) {
    if (proc.exited()) throw new Error(`${name} exited early: ${await readFile(logFile, 'utf8').catch(() => '')}`);
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`${name}: no output within ${timeoutMs} ms`);
    }
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 200);
    });
  }
  return { ...proc, first: lines[0] as Record<string, unknown>, lines };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const CLK_TCK = 100; // Linux USER_HZ
/** CPU seconds (user + system) used so far by a process, or NaN when it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU seconds (all cores, all processes) the machine has been busy since boot. */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] as string;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
    return busy / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Waits (bounded) until processes other than ours leave the machine mostly idle: the machine's
 * busy time minus `ours` stays under `maxCores` for `windows` consecutive `windowMs` windows.
 * Resolves to the last measured foreign load in cores.
 */
export async function waitForQuiet(ours: () => number[], o: { maxCores: number; windowMs: number; windows: number; timeoutMs: number; log: (m: string) => void }): Promise<number> {
  const deadline = Date.now() + o.timeoutMs;
  let calm = 0;
  let foreign = NaN;
  let said = 0;
  for (;;) {
    const pids = ours();
    const m0 = machineBusySeconds();
    const p0 = pids.map(cpuSeconds);
    await sleep(o.windowMs);
    const m1 = machineBusySeconds();
    const p1 = pids.map(cpuSeconds);
    let mine = 0;
    pids.forEach((_, i) => {
      const d = (p1[i] as number) - (p0[i] as number);
      if (Number.isFinite(d)) mine += d;
    });
    foreign = Math.max(0, (m1 - m0 - mine) / (o.windowMs / 1000));
    calm = foreign <= o.maxCores ? calm + 1 : 0;
    if (calm >= o.windows) return foreign;
    if (Date.now() > deadline) {
      o.log(`machine still busy with other processes (${foreign.toFixed(2)} cores); going ahead anyway`);
      return foreign;
    }
    if (Date.now() - said > 30_000) {
      said = Date.now();
      o.log(`waiting for a quiet machine: other processes use ${foreign.toFixed(2)} cores`);
    }
  }
}

/** Resident set size and its peak, in MiB. */
export function memoryMiB(pid: number): { rss: number; peak: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
  } catch {
    return { rss: NaN, peak: NaN };
  }
}
