// A real CouchDB-API server for tests, the demo and benchmarks: pouchdb-server (npm) on a free
// loopback port with its data in a temp dir. Stopped by PID; restartable on the same data.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../node_modules/pouchdb-server/bin/pouchdb-server', import.meta.url));
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface CouchServer {
  url: string;
  dir: string;
  pid(): number | undefined;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stop, then start on the same port and data. */
  restart(): Promise<void>;
  /** Creates databases (ignores ones that exist). */
  createDbs(...names: string[]): Promise<void>;
  /** One JSON request to the server (`path` without the leading slash). */
  request(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }>;
  /** PUTs a document; throws with CouchDB's answer unless it was stored. Returns the new _rev. */
  put(db: string, doc: Record<string, unknown> & { _id: string }): Promise<string>;
  /** Stops and removes the data. */
  destroy(): Promise<void>;
}

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function waitUp(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`pouchdb-server exited with ${child.exitCode}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`pouchdb-server not answering at ${url} within ${timeoutMs} ms`);
}

export async function startCouch(host = '127.0.0.1'): Promise<CouchServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-couch-'));
  await writeFile(path.join(dir, 'config.json'), JSON.stringify({ log: { file: path.join(dir, 'log.txt') } }));
  const port = await freePort(host);
  const url = `http://${host}:${port}`;
  let child: ChildProcess | undefined;

  const server: CouchServer = {
    url,
    dir,
    pid: () => child?.pid,
    async start() {
      child = spawn(process.execPath, [BIN, '--host', host, '--port', String(port), '--dir', dir, '--config', path.join(dir, 'config.json'), '--no-stdout-logs'], {
        stdio: 'ignore',
      });
      running.add(child);
      const c = child;
      c.once('exit', () => running.delete(c));
      await waitUp(url, c, 20_000);
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
    async restart() {
      await server.stop();
      await server.start();
    },
    async createDbs(...names) {
      for (const name of names) {
        const res = await fetch(`${url}/${encodeURIComponent(name)}`, { method: 'PUT' });
        if (!res.ok && res.status !== 412) throw new Error(`creating ${name}: HTTP ${res.status}`);
      }
    },
    async request(method, p, body) {
      const res = await fetch(`${url}/${p}`, { method, headers: { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    },
    async put(db, doc) {
      const { status, json } = await server.request('PUT', `${db}/${encodeURIComponent(doc._id)}`, doc);
      if (status >= 300) throw new Error(`PUT ${db}/${doc._id}: HTTP ${status} ${JSON.stringify(json)}`);
      return json.rev as string;
    },
    async destroy() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
