// A real CouchDB-API server for tests, the demo and benchmarks: pouchdb-server (npm) on a free
// loopback port with its data in a temp dir. A tracked child (process.ts): stopped by PID, killed
// if the caller exits first; restartable on the same data.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, sleep, spawnChild, tail, type Child } from './process.ts';

const BIN = fileURLToPath(new URL('../../node_modules/pouchdb-server/bin/pouchdb-server', import.meta.url));
const NO_VALIDATION = fileURLToPath(new URL('./pouchdb-server-no-validation.cjs', import.meta.url));

/** How startCouch runs pouchdb-server. */
export interface CouchOptions {
  /**
   * false: without express-pouchdb's validation part (no validate_doc_update, and none of its
   * per-document scan of design documents on HTTP writes; see pouchdb-server-no-validation.cjs).
   * The benchmark's stand-in for CouchDB. Default true.
   */
  validation?: boolean;
}

export interface CouchServer {
  url: string;
  dir: string;
  pid(): number | undefined;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stop, then start on the same port and data. */
  restart(): Promise<void>;
  /**
   * Creates databases (ignores ones that exist) and resolves once `_all_dbs` lists every one of
   * them (at most 10 s, then throws): pouchdb-server registers a new database there from a queue
   * after answering the PUT, and a database it never registered answers 404 `no_db_file` after a
   * restart — so a test that stops the server right after creating one would lose it.
   */
  createDbs(...names: string[]): Promise<void>;
  /** One JSON request to the server (`path` without the leading slash). */
  request(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }>;
  /** PUTs a document; throws with CouchDB's answer unless it was stored. Returns the new _rev. */
  put(db: string, doc: Record<string, unknown> & { _id: string }): Promise<string>;
  /** Stops and removes the data. */
  destroy(): Promise<void>;
}

async function waitUp(url: string, child: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exited()) throw new Error(`pouchdb-server exited with ${child.process.exitCode}\n${tail(child.logFile)}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new Error(`pouchdb-server not answering at ${url} within ${timeoutMs} ms\n${tail(child.logFile)}`);
}

/** Tries of a start whose port another process took between freePort and the server's bind. */
const PORT_TRIES = 5;

/**
 * Starts pouchdb-server on a free port of `host` with a fresh temp dir; throws (after stopping it
 * and removing the dir) if it does not answer within 20 s. A port taken by another process
 * between choosing it and binding it (test files start servers side by side) is chosen again, up
 * to PORT_TRIES times.
 */
export async function startCouch(host = '127.0.0.1', options: CouchOptions = {}): Promise<CouchServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-couch-'));
  await writeFile(path.join(dir, 'config.json'), JSON.stringify({ log: { file: path.join(dir, 'log.txt') } }));
  for (let attempt = 1; ; attempt++) {
    try {
      return await startCouchOn(host, dir, await freePort(host), options);
    } catch (err) {
      if (attempt >= PORT_TRIES || !/already in use/.test(String(err))) {
        await rm(dir, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
    }
  }
}

/** startCouch on one port: throws (after stopping the server) if it does not answer within 20 s. */
async function startCouchOn(host: string, dir: string, port: number, options: CouchOptions): Promise<CouchServer> {
  const url = `http://${host}:${port}`;
  let child: Child | undefined;

  const server: CouchServer = {
    url,
    dir,
    pid: () => child?.pid,
    async start() {
      const preload = options.validation === false ? ['--require', NO_VALIDATION] : [];
      const args = [...preload, BIN, '--host', host, '--port', String(port), '--dir', dir, '--config', path.join(dir, 'config.json'), '--no-stdout-logs'];
      child = spawnChild(process.execPath, args, { name: 'pouchdb-server', logFile: path.join(dir, 'pouchdb-server.out') });
      await waitUp(url, child, 20_000);
    },
    async stop() {
      // SIGKILL after 5 s is fine for a test database (it syncs every write).
      await child?.stop(5_000).catch(() => undefined);
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
      const deadline = Date.now() + 10_000;
      for (;;) {
        const listed = (await (await fetch(`${url}/_all_dbs`)).json()) as string[];
        const missing = names.filter((name) => !listed.includes(name));
        if (missing.length === 0) return;
        if (Date.now() > deadline) throw new Error(`pouchdb-server created but did not list ${missing.join(', ')} in _all_dbs within 10 s`);
        await sleep(20);
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
  try {
    await server.start();
  } catch (err) {
    // A server that did not answer in time may still be starting: nothing is left running (the
    // caller removes the dir, or tries another port with it).
    await server.stop().catch(() => undefined);
    throw err;
  }
  return server;
}
