// Child processes of the benchmark (Hermod via `bin/hermod.js start`, the ceiling component,
// the store filler) and /proc readings (CPU time, RSS). Every child is stopped by its PID:
// SIGTERM, bounded wait, SIGKILL; and SIGKILLed by PID if the benchmark itself exits early (the
// process control and Hermod as a process are the devenv's: src/devenv/process.ts, hermod.ts).

import { readFileSync } from 'node:fs';
import { appendFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHermodProcess, type HermodProcess, type HermodProcessOptions } from '../../src/devenv/hermod.ts';
import { sleep, spawnChild, type Child } from '../../src/devenv/process.ts';

export { killAllNow, sleep } from '../../src/devenv/process.ts';
export type { Child as Proc } from '../../src/devenv/process.ts';
export type { HermodProcessOptions as HermodSpawn } from '../../src/devenv/hermod.ts';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The spawn settings of a Hermod attached to `server` as its main component, data under `dir/<name>-data`. */
export function hermodSpawnFor(server: HermodProcessOptions['server'], name: string, dir: string): HermodProcessOptions {
  return { name, dir, server, dataDir: path.join(dir, `${name}-data`) };
}

/** How long a child of the benchmark may take to stop after SIGTERM (a loaded Hermod drains its queues). */
const STOP_TIMEOUT_MS = 15_000;

/**
 * `hermod start` as the benchmark runs it (src/devenv/hermod.ts): log level info, and no publish
 * rate limit (the peers have none either: the load is the point); `o.extra` goes over these.
 */
export function startBenchHermod(o: HermodProcessOptions): Promise<HermodProcess> {
  // HERMOD_BENCH_DIGEST_MS: ajatus.notificationDigestMs of every Hermod (0: partners ask for no
  // notification digests), for an A/B run of digests within one commit.
  const digestMs = process.env.HERMOD_BENCH_DIGEST_MS;
  // Only for Hermods that replicate Ajatus (an appDb): others would log the key as unused.
  const ajatus = digestMs === undefined || o.extra?.appDb === undefined ? {} : { ajatus: { ...(o.extra.ajatus as Record<string, unknown> | undefined), notificationDigestMs: Number(digestMs) } };
  // HERMOD_BENCH_NODE_ARGS: Node/V8 options for every Hermod (space-separated, e.g.
  // "--max-semi-space-size=8"), for an A/B run of runtime flags within one commit.
  const nodeArgs = (process.env.HERMOD_BENCH_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
  // HERMOD_BENCH_LOG_LEVEL: every Hermod's log level (default info), e.g. `debug` to trace a
  // document's way by its log lines' times (debug costs time of its own).
  const logLevel = process.env.HERMOD_BENCH_LOG_LEVEL ?? 'info';
  return startHermodProcess({ logLevel, timeoutMs: 30_000, stopTimeoutMs: STOP_TIMEOUT_MS, ...o, ...(nodeArgs.length > 0 ? { nodeArgs } : {}), extra: { limits: { publishRate: false }, ...o.extra, ...ajatus } });
}

/** Starts a TypeScript script of the benchmark as a process; resolves on its first stdout JSON line. */
export async function startScript(
  name: string,
  script: string,
  args: string[],
  dir: string,
  timeoutMs = 30_000,
): Promise<Child & { first: Record<string, unknown>; lines: Array<Record<string, unknown>> }> {
  const logFile = path.join(dir, `${name}.log`);
  const proc = spawnChild(process.execPath, ['--import', 'tsx', path.join(REPO, 'bench', script), ...args], { name, logFile, cwd: REPO, stdout: 'pipe', stopTimeoutMs: STOP_TIMEOUT_MS });
  const child = proc.process;
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
        void appendFile(logFile, `${line}\n`);
      }
      wake?.();
    }
  });
  child.once('exit', () => wake?.());
  const deadline = Date.now() + timeoutMs;
  while (lines.length === 0) {
    if (proc.exited()) throw new Error(`${name} exited early: ${await readFile(logFile, 'utf8').catch(() => '')}`);
    if (Date.now() > deadline) {
      await proc.stop().catch(() => undefined);
      throw new Error(`${name}: no output within ${timeoutMs} ms`);
    }
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 200);
    });
  }
  return { ...proc, first: lines[0] as Record<string, unknown>, lines };
}

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
