// `hermod status`: a running Hermod answers on a unix socket in its dataDir (`hermod.sock`,
// mode 0600: only the service's user can ask) with one JSON document — connection state,
// node and subscription counts, queue depths. `hermod status --config FILE` finds the socket
// from the same config. No TCP port, nothing to secure beyond file permissions.

import { request, createServer, type Server } from 'node:http';
import { chmod, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterStatus } from '../cluster/cluster.ts';
import { quarantineRequest, type Quarantine, type QuarantineRequest, type QuarantineResponse } from '../transform/quarantine.ts';

export interface StatusReport {
  version: string;
  jid: string;
  pid: number;
  uptimeSeconds: number;
  connection: string;
  store: string;
  nodes: number;
  subscriptions: number;
  queues: { outboxPending: number; notificationsSent: number; notificationsDropped: number; requestsInFlight: number; requestsRefusedBusy: number };
  bounces: { tracked: number; unsubscribed: number };
  /** The processes sharing the store (heartbeats) and who holds which lease (src/cluster/cluster.ts). */
  cluster?: ClusterStatus;
}

export const socketPath = (dataDir: string): string => path.join(dataDir, 'hermod.sock');

/**
 * Serves the report on the socket (replacing a stale one left by a crash); with `quarantine`,
 * also `hermod quarantine` requests (POST /quarantine, a JSON QuarantineRequest).
 */
export async function serveStatus(dataDir: string, report: () => Promise<StatusReport>, quarantine?: Quarantine): Promise<Server> {
  const file = socketPath(dataDir);
  await unlink(file).catch(() => {});
  const server = createServer((req, res) => {
    if (quarantine && req.method === 'POST' && req.url === '/quarantine') {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => {
        Promise.resolve()
          .then(() => quarantineRequest(quarantine, JSON.parse(body) as QuarantineRequest))
          .then(
            (r) => res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(r)}\n`),
            (err: unknown) => res.writeHead(400, { 'content-type': 'text/plain' }).end(`quarantine request failed: ${String(err)}\n`),
          );
      });
      return;
    }
    if (req.method !== 'GET' || req.url !== '/status') {
      res.writeHead(404).end();
      return;
    }
    report().then(
      (r) => res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(r)}\n`),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`status failed: ${String(err)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(file, 0o600);
  return server;
}

export async function closeStatus(server: Server, dataDir: string): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await unlink(socketPath(dataDir)).catch(() => {});
}

/** Asks the instance running on dataDir; rejects with a readable reason. */
export function askStatus(dataDir: string, timeoutMs = 5_000): Promise<StatusReport> {
  const file = socketPath(dataDir);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: file, path: '/status', method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`the instance answered HTTP ${res.statusCode}: ${body.trim()}`));
        else resolve(JSON.parse(body) as StatusReport);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new Error(`no Hermod is running on ${path.dirname(file)} (nothing answers on ${file})`));
      else reject(err);
    });
    req.end();
  });
}

/**
 * Sends a `hermod quarantine` request to the instance running on dataDir. Resolves to its answer,
 * or to undefined when no Hermod runs there (the caller then opens the store itself); rejects with
 * a readable reason otherwise.
 */
export function askQuarantine(dataDir: string, ask: QuarantineRequest, timeoutMs = 10_000): Promise<QuarantineResponse | undefined> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socketPath(dataDir), path: '/quarantine', method: 'POST', timeout: timeoutMs, headers: { 'content-type': 'application/json' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body) as QuarantineResponse) : reject(new Error(`the instance answered HTTP ${res.statusCode}: ${body.trim()}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? resolve(undefined) : reject(err)));
    req.end(JSON.stringify(ask));
  });
}
