// Runs the real `hermod start` command as a child process for end-to-end tests: writes its
// config, waits for the component to come online (from its JSON log), and stops it by PID
// (SIGTERM, or SIGKILL for crash tests). Logs go to a file in the test's temp dir.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerInfo } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';

const BIN = fileURLToPath(new URL('../../bin/hermod.js', import.meta.url));
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Runs `hermod ARGS` to completion (bounded). */
export function hermodCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface HermodProcess {
  pid: number;
  logFile: string;
  /** Lines of the JSON log so far. */
  log(): Promise<Array<Record<string, unknown>>>;
  waitForLog(match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM and wait for a clean exit; resolves to the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
}

export interface HermodProcessOptions {
  server: ServerInfo;
  dir: string;
  admins?: string[];
  extra?: Record<string, unknown>;
  name?: string;
}

export async function writeHermodConfig({ server, dir, admins = [], extra = {}, name = 'hermod' }: HermodProcessOptions): Promise<string> {
  const config = {
    component: { jid: server.componentJid, secret: server.componentSecret, server: server.componentService },
    dataDir: `./${name}-data`,
    pubsub: { admins },
    log: { level: 'debug' },
    ...extra,
  };
  const file = path.join(dir, `${name}.json`);
  await writeFile(file, JSON.stringify(config, null, 2));
  return file;
}

export async function startHermodProcess(options: HermodProcessOptions, waitOnline = true): Promise<HermodProcess> {
  const configFile = await writeHermodConfig(options);
  const logFile = path.join(options.dir, `${options.name ?? 'hermod'}.log`);
  const out = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(process.execPath, [BIN, 'start', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.stdout?.pipe(out, { end: false });
  child.stderr?.pipe(out, { end: false });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  void exited.then(() => running.delete(child));

  const log = async (): Promise<Array<Record<string, unknown>>> => {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  };
  const waitForLog = (match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs = 15_000): Promise<Record<string, unknown>> =>
    eventually(async () => {
      if (child.exitCode !== null) throw new Error(`hermod exited with ${child.exitCode}; log:\n${await readFile(logFile, 'utf8')}`);
      return (await log()).find(match);
    }, what, timeoutMs);

  const handle: HermodProcess = {
    pid: child.pid as number,
    logFile,
    log,
    waitForLog,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 10_000)))]);
      clearTimeout(timer);
      if (code === 'timeout') {
        child.kill('SIGKILL');
        throw new Error('hermod did not stop within 10 s of SIGTERM');
      }
      return code;
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
  if (waitOnline) {
    const onlineCount = (await log()).filter((l) => l.msg === 'component online').length;
    try {
      await eventually(async () => {
        if (child.exitCode !== null) throw new Error(`hermod exited with ${child.exitCode}; log:\n${await readFile(logFile, 'utf8')}`);
        return (await log()).filter((l) => l.msg === 'component online').length > onlineCount;
      }, 'hermod component online', 20_000);
    } catch (err) {
      await handle.kill(); // never leave a process behind that did not come up
      throw err;
    }
  }
  return handle;
}
