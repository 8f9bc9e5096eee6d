// What every test XMPP server of the development environment is: its description (ServerInfo:
// domain, IP, c2s and component addresses, the Hermod component's JID and secret), the ports it
// listens on, the state both server modules (prosody.ts, ejabberd.ts) fill in, and the wait for
// its listeners. The shipped drop-in snippets' locations and placeholders are here too: they are
// the single source of the Hermod attachment for both servers.

import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tail, waitForPorts } from './process.ts';

export interface ServerInfo {
  kind: 'prosody' | 'ejabberd';
  domain: string;
  ip: string;
  c2s: string;
  componentService: string;
  componentJid: string;
  componentSecret: string;
  extraComponents: { jid: string; secret: string }[];
  /** XEP-0363 HTTP upload service of this server (upload.<domain>), served over HTTP on ip:5280. */
  uploadJid: string;
  pid(): number | undefined;
}

/** What the environment asked of the servers (see EnvOptions in env.ts). */
export interface ServerOptions {
  /** Labels of more components each server accepts (`<label>.<domain>`, own secrets). */
  extraComponents?: string[];
  /** The server's own pub/sub service at native.<domain> (benchmarks compare with it). */
  nativePubsub?: boolean;
  /**
   * Bare JIDs that are admins of Prosody's native pub/sub (native.alpha.test): Prosody only lets
   * admins create nodes there. ejabberd's native pub/sub lets anyone create nodes.
   */
  nativePubsubAdmins?: string[];
  /**
   * Grant the main component (pubsub.<domain>, not the extra ones) XEP-0356 privileges (roster
   * get, presence roster) with the shipped snippets prosody/hermod-privilege.cfg.lua and
   * ejabberd/hermod-privilege.yml.
   */
  privileges?: boolean;
}

export const ALPHA_DOMAIN = 'alpha.test';
export const BETA_DOMAIN = 'beta.test';
export const PORTS = { c2s: 5222, s2s: 5269, component: 5347, http: 5280 } as const;
/** Stanza size limit configured on every c2s/s2s/component stream (bytes). */
export const STANZA_LIMIT = 8 * 1024 * 1024;

/**
 * Mechanisms the test servers do not offer. SCRAM stays on: it is what real clients use.
 * (@xmpp/client 0.13 calls mechanism.response() synchronously; sasl-scram-sha-1 >= 1.4 made it
 * async and sends an empty <response/>, so package.json pins sasl-scram-sha-1 to 1.3.0.)
 */
export const DISABLED_SASL = ['DIGEST-MD5', 'X-OAUTH2'];
export const READY_TIMEOUT_MS = 20_000;

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PROSODY_SNIPPET = path.join(REPO_ROOT, 'prosody', 'hermod.cfg.lua');
export const EJABBERD_SNIPPET = path.join(REPO_ROOT, 'ejabberd', 'hermod.yml');
export const PROSODY_PRIVILEGE_SNIPPET = path.join(REPO_ROOT, 'prosody', 'hermod-privilege.cfg.lua');
export const EJABBERD_PRIVILEGE_SNIPPET = path.join(REPO_ROOT, 'ejabberd', 'hermod-privilege.yml');
export const SNIPPET_JID = 'pubsub.example.org';
export const SNIPPET_SECRET = 'CHANGE-ME-hermod-component-secret';
export const SNIPPET_EJABBERD_IP = 'ip: "127.0.0.1"';

/** A Lua string literal. */
export const luaStr = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
/** A YAML double-quoted scalar (JSON strings are valid ones). */
export const yamlStr = (s: string): string => JSON.stringify(s);

/** One server of an environment, as env.ts drives it. */
export interface ServerState {
  info: ServerInfo;
  dir: string;
  pid: number | undefined;
  logs: string[]; // files whose tail goes into error messages
  /** Best effort, synchronous: the server's PID even while it is still starting. */
  findPid(): number | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
  register(user: string, password: string): Promise<void>;
}

/** What a server module needs of its environment: the temp dir, the private hosts file, options, a log. */
export interface ServerContext {
  dir: string;
  hostsFile: string;
  opts: ServerOptions;
  log: (msg: string) => void;
}

const secret = (): string => randomBytes(18).toString('hex');

/** The description of a server of `kind` serving `domain` on `ip`, with fresh component secrets. */
export function makeInfo(kind: ServerInfo['kind'], domain: string, ip: string, extraLabels: string[], getPid: () => number | undefined): ServerInfo {
  return {
    kind,
    domain,
    ip,
    c2s: `xmpp://${ip}:${PORTS.c2s}`,
    componentService: `xmpp://${ip}:${PORTS.component}`,
    componentJid: `pubsub.${domain}`,
    componentSecret: secret(),
    extraComponents: extraLabels.map((l) => ({ jid: `${l}.${domain}`, secret: secret() })),
    uploadJid: `upload.${domain}`,
    pid: getPid,
  };
}

/**
 * Waits (READY_TIMEOUT_MS) until the server accepts on its c2s, s2s and component ports. Throws
 * with the tail of its logs if `isDead` names a reason or the ports stay closed.
 */
export async function waitReady(s: ServerState, isDead: () => string | undefined): Promise<void> {
  const logs = (): string => s.logs.map((f) => tail(f)).join('\n');
  let pending: number[];
  try {
    pending = await waitForPorts(s.info.ip, [PORTS.c2s, PORTS.s2s, PORTS.component], READY_TIMEOUT_MS, isDead);
  } catch (err) {
    throw new Error(`${s.info.kind} (${s.info.domain}) ${(err as Error).message}\n${logs()}`);
  }
  if (pending.length) throw new Error(`${s.info.kind} (${s.info.domain}) did not accept on ${s.info.ip} ports ${pending.join(',')} within ${READY_TIMEOUT_MS} ms\n${logs()}`);
}
