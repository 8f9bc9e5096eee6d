// The environment Hermod's process starts with (src/ops/heap.ts): what the systemd unit gives it,
// and what the development environment (tests, demo, benchmarks) gives it, so the benchmarks
// measure the process as it is deployed. Read from /proc of a real Hermod process.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startHermodProcess } from '../../src/devenv/hermod.ts';
import { HERMOD_ENV } from '../../src/ops/heap.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'hermod-runtime-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A TCP listener standing in for the server's component port (Hermod connects and waits there). */
async function componentPort(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Starts a Hermod (not waiting for it to come online); resolves to its environment, then stops it. */
async function spawnedEnv(name: string): Promise<Map<string, string>> {
  const port = await componentPort();
  const hermod = await startHermodProcess({ name, dir, waitOnline: false, server: { componentJid: 'pubsub.example.org', componentSecret: 's3cret', componentService: `xmpp://127.0.0.1:${port.port}` } });
  try {
    return new Map(
      readFileSync(`/proc/${hermod.pid}/environ`, 'utf8')
        .split('\0')
        .filter((kv) => kv.includes('='))
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]),
    );
  } finally {
    await hermod.kill();
    await port.close();
  }
}

describe('Hermod process environment (src/ops/heap.ts)', () => {
  it('the setting is two malloc arenas', () => {
    assert.deepEqual(HERMOD_ENV, { MALLOC_ARENA_MAX: '2' });
  });

  it('deploy/hermod.service starts Hermod with it', () => {
    const unit = readFileSync(new URL('../../deploy/hermod.service', import.meta.url), 'utf8');
    const environment = unit.split('\n').filter((l) => l.startsWith('Environment='));
    for (const [k, v] of Object.entries(HERMOD_ENV)) assert.ok(environment.some((l) => l.slice('Environment='.length).split(/\s+/).includes(`${k}=${v}`)), `Environment=${k}=${v} in the unit`);
  });

  it('the development environment starts Hermod with it', async () => {
    const before = process.env.MALLOC_ARENA_MAX;
    delete process.env.MALLOC_ARENA_MAX;
    try {
      const env = await spawnedEnv('plain');
      for (const [k, v] of Object.entries(HERMOD_ENV)) assert.equal(env.get(k), v, k);
    } finally {
      if (before !== undefined) process.env.MALLOC_ARENA_MAX = before;
    }
  });

  it("an operator's own MALLOC_ARENA_MAX wins", async () => {
    const before = process.env.MALLOC_ARENA_MAX;
    process.env.MALLOC_ARENA_MAX = '4';
    try {
      const env = await spawnedEnv('operator');
      assert.equal(env.get('MALLOC_ARENA_MAX'), '4');
    } finally {
      if (before === undefined) delete process.env.MALLOC_ARENA_MAX;
      else process.env.MALLOC_ARENA_MAX = before;
    }
  });
});
