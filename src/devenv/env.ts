// The XMPP environment for tests, the demo and benchmarks: a Prosody serving alpha.test and an
// ejabberd serving beta.test (prosody.ts, ejabberd.ts), federating over s2s (dialback, no TLS)
// on loopback addresses.
//
// Each environment gets a fresh temp dir (config, data, logs, hosts file) and its own pair of
// loopback IPs, so both servers listen on the standard ports (5222/5269/5347) and parallel test
// processes do not collide. The servers resolve each other's names through a private hosts file
// that is bind-mounted over /etc/hosts in a private mount namespace (`unshare -m`) that only the
// server processes see; the caller connects by IP and needs no names.
//
// Hermod is attached with the shipped drop-in snippets (prosody/hermod.cfg.lua,
// ejabberd/hermod.yml), templated with the test domain and a random secret, so they are tested.
// Processes are only ever stopped by PID (process.ts).
//
// Needs root (unshare/mount, prosody run_as_root, ejabberdctl switching to the ejabberd user).

import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createEjabberd } from './ejabberd.ts';
import { describeBusyPorts } from './ports.ts';
import { ROOT_REASON } from './preflight.js';
import { atEmergencyExit, signal, tryConnect } from './process.ts';
import { createProsody } from './prosody.ts';
import { ALPHA_DOMAIN, BETA_DOMAIN, PORTS, type ServerContext, type ServerInfo, type ServerOptions, type ServerState } from './xmpp-server.ts';

export interface XmppEnv {
  dir: string;
  hostsFile: string;
  alpha?: ServerInfo;
  beta?: ServerInfo;
  register(server: ServerInfo, user: string, password: string): Promise<void>;
  restart(server: ServerInfo): Promise<void>;
  stopServer(server: ServerInfo): Promise<void>;
  startServer(server: ServerInfo): Promise<void>;
  stop(): Promise<void>;
}

export interface EnvOptions extends ServerOptions {
  prosody?: boolean;
  ejabberd?: boolean;
  /** '127.A.B' (alpha gets .2, beta .3); default derived from process.pid. */
  ipBase?: string;
  log?: (msg: string) => void;
}

/**
 * The servers cannot listen on their address: something else already accepts connections on
 * their ports there (its message names the process and what to do). Not a fault of the servers.
 */
export class PortsBusyError extends Error {
  override name = 'PortsBusyError';
}

/** Throws PortsBusyError unless every port `server` will listen on at `ip` is free. */
async function assertPortsFree(ip: string, server: string): Promise<void> {
  const ports = [PORTS.c2s, PORTS.s2s, PORTS.component, PORTS.http];
  const busy = await Promise.all(ports.map((p) => tryConnect(ip, p, 300)));
  const used = ports.filter((_, i) => busy[i]);
  if (used.length) throw new PortsBusyError(describeBusyPorts(server, ip, used));
}

let envCounter = 0;

function resolveIpBase(opt: string | undefined, n: number): string {
  if (opt !== undefined) {
    const base = opt.replace(/\.$/, '');
    const parts = base.split('.');
    if (parts.length !== 3 || parts[0] !== '127' || !parts.every((p) => /^\d+$/.test(p) && Number(p) < 256)) {
      throw new Error(`ipBase must look like "127.A.B" (loopback), got ${JSON.stringify(opt)}`);
    }
    return base;
  }
  // Per process (and per environment within it): nearby PIDs get distinct pairs. Never 127.0.x.
  const v = process.pid * 4 + (n % 4);
  return `127.${1 + (Math.floor(v / 256) % 254)}.${v % 256}`;
}

/**
 * Starts Prosody (alpha.test) and/or ejabberd (beta.test) on a fresh pair of loopback IPs, with
 * a private hosts file, in a fresh temp dir. Throws (after stopping what it started) with the
 * servers' log tails if one does not come up; PortsBusyError if their ports are taken; Error if
 * not root. Stop it with `stop()` (by PID); it is also killed if this process exits first.
 */
export async function startXmppEnv(opts: EnvOptions = {}): Promise<XmppEnv> {
  if (process.getuid?.() !== 0) throw new Error(`the XMPP test servers need root: ${ROOT_REASON}`);
  const t0 = Date.now();
  const log = opts.log ?? (() => {});
  const envNo = envCounter++;
  const base = resolveIpBase(opts.ipBase, envNo);
  const wantProsody = opts.prosody ?? true;
  const wantEjabberd = opts.ejabberd ?? true;
  const alphaIp = `${base}.2`;
  const betaIp = `${base}.3`;

  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'hermod-xmpp-'));
  await fsp.chmod(dir, 0o711); // the ejabberd user must traverse it
  const hostsFile = path.join(dir, 'hosts');
  const ctx: ServerContext = { dir, hostsFile, opts, log };

  const servers: ServerState[] = [];
  let stopping: Promise<void> | undefined;
  const keep = process.env.HERMOD_KEEP_TMP === '1';

  // Synchronous last resort (process exit/signal): SIGKILL by PID, remove the dir.
  const unregister = atEmergencyExit(() => {
    for (const s of servers) signal(s.findPid(), 'SIGKILL');
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  });

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const t1 = Date.now();
      await Promise.all(
        servers.map((s) =>
          s.stop().catch((err: unknown) => {
            log(`stopping ${s.info.kind} failed: ${String(err)}; SIGKILL`);
            signal(s.findPid(), 'SIGKILL');
          }),
        ),
      );
      if (keep) log(`HERMOD_KEEP_TMP=1: keeping ${dir}`);
      else await fsp.rm(dir, { recursive: true, force: true }).catch((err: unknown) => log(`rm ${dir}: ${String(err)}`));
      unregister();
      log(`environment stopped in ${Date.now() - t1} ms`);
    })().catch(() => {});
    return stopping;
  };

  try {
    // Hosts file: the machine's own entries plus the test names (the servers see only this one).
    const names: string[] = [];
    const comps = (domain: string) => [
      domain,
      `pubsub.${domain}`,
      ...(opts.nativePubsub ? [`native.${domain}`] : []),
      ...(opts.extraComponents ?? []).map((l) => `${l}.${domain}`),
      `upload.${domain}`,
    ];
    if (wantProsody) names.push(`${alphaIp} ${comps(ALPHA_DOMAIN).join(' ')}`);
    if (wantEjabberd) names.push(`${betaIp} ${comps(BETA_DOMAIN).join(' ')}`);
    const systemHosts = await fsp.readFile('/etc/hosts', 'utf8').catch(() => '127.0.0.1 localhost\n');
    await fsp.writeFile(hostsFile, `${systemHosts.trimEnd()}\n# hermod devenv\n${names.join('\n')}\n`, { mode: 0o644 });

    if (wantProsody) {
      await assertPortsFree(alphaIp, `Prosody (${ALPHA_DOMAIN})`);
      servers.push(await createProsody(ctx, alphaIp));
    }
    if (wantEjabberd) {
      await assertPortsFree(betaIp, `ejabberd (${BETA_DOMAIN})`);
      servers.push(await createEjabberd(ctx, betaIp, envNo));
    }
    const results = await Promise.allSettled(servers.map((s) => s.start()));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length === 1) throw failed[0]!.reason;
    if (failed.length) throw new AggregateError(failed.map((f) => f.reason), `servers failed to start:\n${failed.map((f) => (f.reason instanceof Error ? f.reason.message : String(f.reason))).join('\n')}`);
  } catch (err) {
    if (keep) log(`start failed; files kept in ${dir}`);
    await stop();
    throw err;
  }

  const byKind = (server: ServerInfo): ServerState => {
    const s = servers.find((x) => x.info.kind === server.kind);
    if (!s) throw new Error(`no ${server.kind} server in this environment`);
    return s;
  };
  const alpha = servers.find((s) => s.info.kind === 'prosody')?.info;
  const beta = servers.find((s) => s.info.kind === 'ejabberd')?.info;
  log(`xmpp env ready in ${Date.now() - t0} ms: ${dir}`);

  const env: XmppEnv = {
    dir,
    hostsFile,
    register: (server, user, password) => byKind(server).register(user, password),
    stopServer: (server) => byKind(server).stop(),
    startServer: (server) => byKind(server).start(),
    async restart(server) {
      const s = byKind(server);
      await s.stop();
      await s.start();
    },
    stop,
  };
  if (alpha) env.alpha = alpha;
  if (beta) env.beta = beta;
  return env;
}

/** Start an environment, run fn, always stop it. */
export async function withXmppEnv<T>(opts: EnvOptions, fn: (env: XmppEnv) => Promise<T>): Promise<T> {
  const env = await startXmppEnv(opts);
  try {
    return await fn(env);
  } finally {
    await env.stop();
  }
}
