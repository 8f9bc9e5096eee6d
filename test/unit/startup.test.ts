// Composed start-up (src/app/): a start that fails half way closes everything it had opened —
// the component connection, the status socket, the metrics server, the store — so the process
// can exit by itself; and a clean stop does the same. Each case runs Hermod in a child process
// and waits (bounded) for it to exit on its own: a leftover socket, server or timer keeps it alive.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { StopStack } from '../../src/app/stop-stack.ts';

const SCRIPT = fileURLToPath(new URL('../fixtures/startup/start-and-fail.ts', import.meta.url));
const dir = mkdtempSync(path.join(tmpdir(), 'hermod-startup-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A TCP listener standing in for the server's component port: counts connections and closes. */
async function componentPort(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let total = 0;
  const server = net.createServer((socket) => {
    total++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    connections: () => total,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Runs the fixture with `config`; resolves with its report once it exits, failing if it does not within 30 s. */
function run(name: string, config: Record<string, unknown>, ...args: string[]): Promise<{ report: { started: boolean; error?: string; name?: string }; code: number | null }> {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, ['--import', 'tsx', SCRIPT, file, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the process did not exit by itself within 30 s (something was left open); it said: ${out.trim()}`));
    }, 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve({ report: JSON.parse(line) as { started: boolean; error?: string }, code });
      } catch {
        reject(new Error(`no report from the child (exit ${code}): ${out}`));
      }
    });
  });
}

const base = (port: number, name: string): Record<string, unknown> => ({
  component: { jid: 'pubsub.startup.test', secret: 's', server: `xmpp://127.0.0.1:${port}` },
  dataDir: path.join(dir, name),
  log: { level: 'silent' },
});

describe('composed start-up', () => {
  it('a start that fails before connecting (metrics port taken) leaves nothing open', async () => {
    const xmpp = await componentPort();
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const { report } = await run('metrics', { ...base(xmpp.port, 'metrics'), metrics: { port } });
      assert.equal(report.started, false);
      assert.match(report.error ?? '', /^metrics\.port: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
      assert.equal(xmpp.connections(), 0, 'no connection attempt before the start is complete');
      assert.equal(existsSync(path.join(dir, 'metrics', 'hermod.sock')), false, 'the status socket is removed');
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      await xmpp.close();
    }
  });

  it('a start that fails after connecting (Midgard topics export missing) closes the connection too', async () => {
    const xmpp = await componentPort();
    try {
      const { report } = await run('midgard', { ...base(xmpp.port, 'midgard'), midgard: { bus: 'none', topicsExport: path.join(dir, 'no-such-export.xml') } });
      assert.equal(report.started, false);
      assert.match(report.error ?? '', /^midgard\.topicsExport: cannot read .*no-such-export\.xml: ENOENT/);
      // The child exited by itself: its connection (and retry timer) were closed, not left open.
      assert.ok(xmpp.connections() >= 1, 'the failure came after the component had connected');
      assert.equal(existsSync(path.join(dir, 'midgard', 'hermod.sock')), false, 'the status socket is removed');
    } finally {
      await xmpp.close();
    }
  });

  it('stop() after a start closes everything as well', async () => {
    const xmpp = await componentPort();
    try {
      const { report } = await run('clean', base(xmpp.port, 'clean'), 'stop');
      assert.equal(report.started, true);
    } finally {
      await xmpp.close();
    }
  });
});

describe('StopStack', () => {
  it('unwinds newest first, goes on past a failing step, and only once', async () => {
    const errors: string[] = [];
    const stack = new StopStack({ error: (_msg, fields) => errors.push(String(fields?.step)) });
    const order: string[] = [];
    stack.push('store', () => order.push('store'));
    stack.push('journal', () => {
      throw new Error('disk gone');
    });
    stack.push('connection', async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      order.push('connection');
    });
    await Promise.all([stack.unwind(), stack.unwind()]);
    assert.deepEqual(order, ['connection', 'store']);
    assert.deepEqual(errors, ['journal']);
    assert.throws(() => stack.push('late', () => {}), /already stopping/);
  });
});
