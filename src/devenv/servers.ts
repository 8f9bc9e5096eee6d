// Real XMPP servers for tests, the demo and benchmarks: a Prosody serving alpha.test and an
// ejabberd serving beta.test, federating over s2s (dialback, no TLS) on loopback addresses.
//
// Each environment gets a fresh temp dir (config, data, logs, hosts file) and its own pair of
// loopback IPs, so both servers listen on the standard ports (5222/5269/5347) and parallel test
// processes do not collide. The servers resolve each other's names through a private hosts file
// that is bind-mounted over /etc/hosts in a private mount namespace (`unshare -m`) that only the
// server processes see; the caller connects by IP and needs no names.
//
// Hermod is attached with the shipped drop-in snippets (prosody/hermod.cfg.lua,
// ejabberd/hermod.yml), templated with the test domain and a random secret, so they are tested.
//
// Processes are only ever stopped by PID (ours: prosody, the ejabberd beam VM, and commands we
// spawned). epmd (Erlang port mapper) is started on demand by the first Erlang node and is shared
// by all Erlang nodes on the machine, so it is deliberately left running.
//
// Needs root (unshare/mount, prosody run_as_root, ejabberdctl switching to the ejabberd user).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeBusyPorts } from './ports.ts';
import { ROOT_REASON } from './preflight.js';

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

export interface EnvOptions {
  prosody?: boolean;
  ejabberd?: boolean;
  /** '127.A.B' (alpha gets .2, beta .3); default derived from process.pid. */
  ipBase?: string;
  extraComponents?: string[];
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
  log?: (msg: string) => void;
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
const DISABLED_SASL = ['DIGEST-MD5', 'X-OAUTH2'];
const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const KILL_TIMEOUT_MS = 3_000;
const CMD_TIMEOUT_MS = 30_000;
const LOG_TAIL_LINES = 20;

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PROSODY_SNIPPET = path.join(REPO_ROOT, 'prosody', 'hermod.cfg.lua');
export const EJABBERD_SNIPPET = path.join(REPO_ROOT, 'ejabberd', 'hermod.yml');
export const PROSODY_PRIVILEGE_SNIPPET = path.join(REPO_ROOT, 'prosody', 'hermod-privilege.cfg.lua');
export const EJABBERD_PRIVILEGE_SNIPPET = path.join(REPO_ROOT, 'ejabberd', 'hermod-privilege.yml');
const SNIPPET_JID = 'pubsub.example.org';
const SNIPPET_SECRET = 'CHANGE-ME-hermod-component-secret';
const SNIPPET_EJABBERD_IP = 'ip: "127.0.0.1"';

// ---------------------------------------------------------------------------------------------
// small helpers

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const secret = () => randomBytes(18).toString('hex');

/** True if the process exists and is not a zombie (kill(pid, 0) alone says yes for zombies). */
function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
}

function signal(pid: number | undefined, sig: NodeJS.Signals): void {
  // Never 0/1/-1 (own group, init, everything). Negative = a process group we created.
  if (pid === undefined || pid === 0 || pid === 1 || pid === -1) return;
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

async function waitDead(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await sleep(25);
  }
  return !isAlive(pid);
}

/** SIGTERM, wait, SIGKILL, wait. Resolves true if the process is gone. */
async function terminate(pid: number, ms = STOP_TIMEOUT_MS): Promise<boolean> {
  if (!isAlive(pid)) return true;
  signal(pid, 'SIGTERM');
  if (await waitDead(pid, ms)) return true;
  signal(pid, 'SIGKILL');
  return waitDead(pid, KILL_TIMEOUT_MS);
}

function tail(file: string, lines = LOG_TAIL_LINES): string {
  try {
    const text = fs.readFileSync(file, 'utf8').trimEnd();
    if (!text) return `--- ${file}: (empty) ---`;
    const all = text.split('\n');
    return `--- ${file} (last ${Math.min(lines, all.length)} lines) ---\n${all.slice(-lines).join('\n')}`;
  } catch {
    return `--- ${file}: (missing) ---`;
  }
}

function tryConnect(host: string, port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

interface CmdResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/** Run a command in its own process group; on timeout kill that group (by its id) and throw. */
function run(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<CmdResult> {
  const timeoutMs = opts.timeoutMs ?? CMD_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) signal(-child.pid, 'SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms; output:\n${output}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(spawnFailure(cmd, err)));
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig, output });
    });
  });
}

const luaStr = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
const yamlStr = (s: string) => JSON.stringify(s); // JSON strings are valid YAML double-quoted scalars

// ---------------------------------------------------------------------------------------------
// snippet templating (the shipped drop-ins are the single source of the Hermod attachment)

export function renderProsodySnippet(text: string, jid: string, componentSecret: string): string {
  if (!text.includes(`Component "${SNIPPET_JID}"`) || !text.includes(SNIPPET_SECRET)) {
    throw new Error(`prosody snippet lacks Component "${SNIPPET_JID}" or the secret placeholder ${SNIPPET_SECRET}`);
  }
  return text.split(SNIPPET_JID).join(jid).split(SNIPPET_SECRET).join(componentSecret);
}

export function renderEjabberdSnippet(
  text: string,
  ip: string,
  components: { jid: string; secret: string }[],
): string {
  if (!text.includes(SNIPPET_EJABBERD_IP)) throw new Error(`ejabberd snippet lacks ${SNIPPET_EJABBERD_IP}`);
  const hostRe = new RegExp(
    `^([ \\t]+)${SNIPPET_JID.replace(/\./g, '\\.')}:[ \\t]*\\n([ \\t]+)password:[ \\t]*"${SNIPPET_SECRET}"[ \\t]*$`,
    'm',
  );
  const m = hostRe.exec(text);
  if (!m) throw new Error(`ejabberd snippet lacks a "${SNIPPET_JID}: password: ${SNIPPET_SECRET}" hosts entry`);
  const [, keyIndent, pwIndent] = m;
  const entries = components
    .map((c) => `${keyIndent}${c.jid}:\n${pwIndent}password: ${yamlStr(c.secret)}`)
    .join('\n');
  return text.replace(hostRe, () => entries).replace(SNIPPET_EJABBERD_IP, `ip: ${yamlStr(ip)}`);
}

/** The XEP-0356 snippet for Prosody: host and component JID filled in. */
export function renderProsodyPrivilegeSnippet(text: string, domain: string, jid: string): string {
  if (!text.includes(`"${SNIPPET_JID}"`) || !text.includes('VirtualHost "example.org"')) throw new Error('prosody privilege snippet lacks its VirtualHost or Component');
  return text.split(SNIPPET_JID).join(jid).split('"example.org"').join(luaStr(domain));
}

/** The XEP-0356 snippet for ejabberd, split into its access_rules and modules entries (indented lines). */
export function renderEjabberdPrivilegeSnippet(text: string, jid: string): { accessRules: string[]; modules: string[] } {
  const sections: Record<string, string[]> = {};
  let current: string[] | undefined;
  for (const line of text.split(SNIPPET_JID).join(jid).split('\n')) {
    const top = /^([a-z_]+):\s*$/.exec(line);
    if (top) sections[top[1] as string] = current = [];
    else if (/^\s+\S/.test(line) && !/^\s*##/.test(line)) current?.push(line);
    else if (/^\S/.test(line)) current = undefined;
  }
  const { access_rules: accessRules, modules } = sections;
  if (!accessRules?.length || !modules?.length) throw new Error('ejabberd privilege snippet lacks its access_rules or modules entries');
  return { accessRules, modules };
}

// ---------------------------------------------------------------------------------------------
// per-server state

interface ServerState {
  info: ServerInfo;
  dir: string;
  pid: number | undefined;
  child?: ChildProcess; // prosody only (our direct child)
  logs: string[]; // files whose tail goes into error messages
  /** Best effort, synchronous: the server's PID even while it is still starting. */
  findPid(): number | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
  register(user: string, password: string): Promise<void>;
}

interface Ctx {
  dir: string;
  hostsFile: string;
  opts: EnvOptions;
  log: (msg: string) => void;
}

function makeInfo(
  kind: ServerInfo['kind'],
  domain: string,
  ip: string,
  extraLabels: string[],
  getPid: () => number | undefined,
): ServerInfo {
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

async function waitReady(s: ServerState, isDead: () => string | undefined): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const ports = [PORTS.c2s, PORTS.s2s, PORTS.component];
  let pending: number[] = ports;
  while (Date.now() < deadline) {
    const dead = isDead();
    if (dead) throw new Error(`${s.info.kind} (${s.info.domain}) ${dead}\n${s.logs.map((f) => tail(f)).join('\n')}`);
    const ok = await Promise.all(pending.map((p) => tryConnect(s.info.ip, p, 500)));
    pending = pending.filter((_, i) => !ok[i]);
    if (pending.length === 0) return;
    await sleep(50);
  }
  throw new Error(
    `${s.info.kind} (${s.info.domain}) did not accept on ${s.info.ip} ports ${pending.join(',')} ` +
      `within ${READY_TIMEOUT_MS} ms\n${s.logs.map((f) => tail(f)).join('\n')}`,
  );
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

/** The message for a command that could not be spawned (ENOENT: not installed). */
function spawnFailure(cmd: string, err: Error): string {
  return (err as NodeJS.ErrnoException).code === 'ENOENT'
    ? `${cmd}: command not found: install the system packages of deploy/system-packages.txt (node src/devenv/preflight.js does it as root)`
    : `${cmd}: cannot run: ${err.message}`;
}

// ---------------------------------------------------------------------------------------------
// Prosody

function prosodyConfig(ctx: Ctx, info: ServerInfo, dir: string, includes: string[]): string {
  const o = ctx.opts;
  const lines = [
    '-- Generated by src/devenv/servers.ts for tests. NOT a production config (no TLS).',
    'run_as_root = true',
    `pidfile = ${luaStr(path.join(dir, 'prosody.pid'))}`,
    `data_path = ${luaStr(path.join(dir, 'data'))}`,
    `certificates = ${luaStr(path.join(dir, 'certs'))}`,
    `log = { { levels = { min = "info" }, to = "file", filename = ${luaStr(path.join(dir, 'prosody.log'))} } }`,
    `interfaces = { ${luaStr(info.ip)} }`,
    `local_interfaces = { ${luaStr(info.ip)} }`,
    `c2s_ports = { ${PORTS.c2s} }`,
    `s2s_ports = { ${PORTS.s2s} }`,
    `component_ports = { ${PORTS.component} }`,
    `component_interfaces = { ${luaStr(info.ip)} }`,
    'c2s_direct_tls_ports = { }',
    's2s_direct_tls_ports = { }',
    'legacy_ssl_ports = { }',
    `http_ports = { ${PORTS.http} }`,
    `http_interfaces = { ${luaStr(info.ip)} }`,
    'https_ports = { }',
    '-- XEP-0363 upload URLs by IP: the other site fetches them without resolving test names',
    `http_external_url = ${luaStr(`http://${info.ip}:${PORTS.http}/`)}`,
    `http_default_host = ${luaStr(info.uploadJid)}`,
    'use_ipv6 = false',
    '-- libunbound ignores /etc/hosts unless told; ours is a bind-mounted private hosts file',
    'unbound = { hoststxt = true }',
    '-- no "tls" (no certs), no "limits" (no rate limiting for benchmarks)',
    'modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "dialback"; "time"; "version" }',
    'c2s_require_encryption = false',
    's2s_require_encryption = false',
    's2s_secure_auth = false',
    'allow_unencrypted_plain_auth = true',
    `disable_sasl_mechanisms = { ${DISABLED_SASL.map(luaStr).join('; ')} }`,
    'authentication = "internal_plain"',
    'storage = "internal"',
    `c2s_stanza_size_limit = ${STANZA_LIMIT}`,
    `s2s_stanza_size_limit = ${STANZA_LIMIT}`,
    `component_stanza_size_limit = ${STANZA_LIMIT}`,
    'network_default_read_size = 65536',
    '',
    `VirtualHost ${luaStr(info.domain)}`,
    '',
    `Component ${luaStr(info.uploadJid)} "http_file_share"`,
    `\thttp_file_share_size_limit = ${64 * 1024 * 1024}`,
    `\thttp_file_share_daily_quota = ${4 * 1024 * 1024 * 1024}`,
    '',
  ];
  if (o.nativePubsub) {
    lines.push(`Component ${luaStr(`native.${info.domain}`)} "pubsub"`);
    lines.push(`\tadmins = { ${(o.nativePubsubAdmins ?? []).map(luaStr).join('; ')} }`);
    lines.push('');
  }
  for (const inc of includes) lines.push(`Include ${luaStr(inc)}`);
  return lines.join('\n') + '\n';
}

/** Prosody resolves s2s names (our private hosts file) only through libunbound: say so if it is missing. */
function assertLuaUnbound(): void {
  let script: string;
  try {
    script = fs.readFileSync('/usr/bin/prosody', 'utf8');
  } catch {
    throw new Error('Prosody is not installed (no /usr/bin/prosody): install the Debian package prosody (deploy/system-packages.txt lists all that is needed)');
  }
  const interpreter = /^#!.*\b(lua[0-9.]*)\s*$/m.exec(script.split('\n')[0] ?? '')?.[1] ?? 'lua5.4';
  const probe = spawnSync(interpreter, ['-e', 'require "lunbound"'], { stdio: 'ignore', timeout: 10_000 });
  if (probe.status !== 0) throw new Error(`Prosody's ${interpreter} has no lunbound module: install the Debian package lua-unbound (s2s name resolution needs it)`);
}

async function createProsody(ctx: Ctx, ip: string): Promise<ServerState> {
  assertLuaUnbound();
  const dir = path.join(ctx.dir, 'prosody');
  await fsp.mkdir(path.join(dir, 'data'), { recursive: true, mode: 0o700 });
  await fsp.chmod(dir, 0o700);
  await fsp.mkdir(path.join(dir, 'certs'), { recursive: true });
  const cfg = path.join(dir, 'prosody.cfg.lua');
  const logFile = path.join(dir, 'prosody.log');
  const outFile = path.join(dir, 'prosody.stdout');
  const pidFile = path.join(dir, 'prosody.pid');

  const s: ServerState = {
    info: makeInfo('prosody', ALPHA_DOMAIN, ip, ctx.opts.extraComponents ?? [], () => s.pid),
    dir,
    pid: undefined,
    logs: [logFile, outFile],
    findPid: () => s.pid,
    async start() {
      if (s.pid !== undefined && isAlive(s.pid)) throw new Error('prosody is already running');
      await fsp.rm(pidFile, { force: true });
      const t0 = Date.now();
      const out = fs.openSync(outFile, 'a');
      // unshare execs sh, sh execs prosody: the child's PID is prosody's PID.
      const child = spawn(
        'unshare',
        ['-m', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec prosody --config "$1" -F', ctx.hostsFile, cfg],
        { detached: true, stdio: ['ignore', out, out] },
      );
      fs.closeSync(out);
      let exit: string | undefined;
      child.once('error', (err) => (exit = spawnFailure('unshare', err)));
      child.once('exit', (code, sig) => {
        exit = `exited (code ${code}, signal ${sig})`;
        if (s.child === child) s.pid = undefined;
      });
      child.unref();
      s.child = child;
      s.pid = child.pid;
      await waitReady(s, () => exit);
      let filePid = 0;
      try {
        filePid = Number(fs.readFileSync(pidFile, 'utf8').trim()) || 0;
      } catch {
        /* no pidfile: keep the spawned PID */
      }
      if (filePid && filePid !== s.pid) {
        ctx.log(`prosody: pidfile says ${filePid}, spawned ${s.pid}; using pidfile`);
        s.pid = filePid;
      }
      ctx.log(`prosody ${info().domain} on ${ip} up in ${Date.now() - t0} ms (pid ${s.pid})`);
    },
    async stop() {
      const pid = s.pid;
      if (pid === undefined) return;
      const t0 = Date.now();
      if (!(await terminate(pid))) throw new Error(`prosody pid ${pid} did not die`);
      s.pid = undefined;
      ctx.log(`prosody stopped in ${Date.now() - t0} ms`);
    },
    async register(user, password) {
      const r = await run('prosodyctl', ['--config', cfg, 'register', user, info().domain, password]);
      if (r.code !== 0) throw new Error(`prosodyctl register ${user}@${info().domain} failed (${r.code}): ${r.output}`);
    },
  };
  const info = () => s.info;

  const snippet = await fsp.readFile(PROSODY_SNIPPET, 'utf8');
  const includes: string[] = [];
  for (const c of [{ jid: s.info.componentJid, secret: s.info.componentSecret }, ...s.info.extraComponents]) {
    const file = path.join(dir, `hermod-${c.jid}.cfg.lua`);
    await fsp.writeFile(file, renderProsodySnippet(snippet, c.jid, c.secret));
    includes.push(file);
  }
  if (ctx.opts.privileges) {
    const file = path.join(dir, 'hermod-privilege.cfg.lua');
    await fsp.writeFile(file, renderProsodyPrivilegeSnippet(await fsp.readFile(PROSODY_PRIVILEGE_SNIPPET, 'utf8'), s.info.domain, s.info.componentJid));
    includes.push(file);
  }
  await fsp.writeFile(cfg, prosodyConfig(ctx, s.info, dir, includes));
  return s;
}

// ---------------------------------------------------------------------------------------------
// ejabberd

function ejabberdConfig(ctx: Ctx, info: ServerInfo, serviceSnippet: string, dir: string, privilege?: { accessRules: string[]; modules: string[] }): string {
  const o = ctx.opts;
  const ip = yamlStr(info.ip);
  const modules = [
    '  mod_disco: {}',
    '  mod_ping: {}',
    '  mod_roster: {}',
    '  mod_offline: {}',
    '  mod_s2s_dialback: {}',
    '  mod_http_upload:',
    `    hosts: [${yamlStr(info.uploadJid)}]`,
    `    put_url: ${yamlStr(`http://${info.ip}:${PORTS.http}/upload`)}`,
    `    docroot: ${yamlStr(path.join(dir, 'upload'))}`,
    `    max_size: ${64 * 1024 * 1024}`,
    '    thumbnail: false',
    '    access: hermod_upload',
  ];
  if (o.nativePubsub) {
    modules.push(
      '  mod_caps: {}',
      '  mod_pubsub:',
      `    hosts: [${yamlStr(`native.${info.domain}`)}]`,
      '    access_createnode: all',
      '    plugins: ["flat", "pep"]',
    );
  }
  if (privilege) modules.push(...privilege.modules);
  return [
    '## Generated by src/devenv/servers.ts for tests. NOT a production config (no TLS).',
    'hosts:',
    `  - ${yamlStr(info.domain)}`,
    'loglevel: info',
    'log_rotate_count: 0',
    'auth_method: internal',
    'auth_password_format: plain',
    `disable_sasl_mechanisms: [${DISABLED_SASL.map(yamlStr).join(', ')}]`,
    '## dialback without TLS; retry a failed outgoing s2s route soon instead of bouncing for minutes',
    's2s_use_starttls: false',
    's2s_max_retry_delay: 2',
    'outgoing_s2s_families: [ipv4]',
    'max_fsm_queue: 100000',
    'acl:',
    '  local:',
    '    user_regexp: ""',
    'access_rules:',
    '  local:',
    '    allow: local',
    '  c2s:',
    '    allow: all',
    '  ## the component (not a local user) uploads large attachments (XEP-0363)',
    '  hermod_upload:',
    '    allow: all',
    ...(privilege?.accessRules ?? []),
    '## no traffic shaping anywhere (benchmarks)',
    'shaper_rules:',
    '  c2s_shaper: none',
    '  s2s_shaper: none',
    'listen:',
    '  -',
    `    port: ${PORTS.c2s}`,
    `    ip: ${ip}`,
    '    module: ejabberd_c2s',
    `    max_stanza_size: ${STANZA_LIMIT}`,
    '    shaper: c2s_shaper',
    '    access: c2s',
    '  -',
    `    port: ${PORTS.s2s}`,
    `    ip: ${ip}`,
    '    module: ejabberd_s2s_in',
    `    max_stanza_size: ${STANZA_LIMIT}`,
    '    shaper: s2s_shaper',
    '  -',
    `    port: ${PORTS.http}`,
    `    ip: ${ip}`,
    '    module: ejabberd_http',
    '    request_handlers:',
    '      /upload: mod_http_upload',
    serviceSnippet.trimEnd(),
    'modules:',
    ...modules,
    '',
  ].join('\n');
}

function findBeamPid(node: string): number | undefined {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return undefined;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (!argv[0]?.includes('beam')) continue;
      const i = argv.findIndex((a) => a === '-sname' || a === '-name');
      if (i >= 0 && argv[i + 1] === node) return Number(e);
    } catch {
      /* raced with exit */
    }
  }
  return undefined;
}

let ejabberdIds: { uid: number; gid: number } | undefined;
function ejabberdUser(): { uid: number; gid: number } {
  if (ejabberdIds) return ejabberdIds;
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('ejabberd:'));
  const f = line?.split(':');
  if (!f || f.length < 4) throw new Error('no "ejabberd" user in /etc/passwd: is the ejabberd package installed?');
  ejabberdIds = { uid: Number(f[2]), gid: Number(f[3]) };
  return ejabberdIds;
}

async function chownTree(p: string, uid: number, gid: number): Promise<void> {
  await fsp.chown(p, uid, gid);
  const st = await fsp.lstat(p);
  if (!st.isDirectory()) return;
  for (const e of await fsp.readdir(p)) await chownTree(path.join(p, e), uid, gid);
}

async function createEjabberd(ctx: Ctx, ip: string, envNo: number): Promise<ServerState> {
  const dir = path.join(ctx.dir, 'ejabberd');
  const spool = path.join(dir, 'spool');
  const logsDir = path.join(dir, 'logs');
  await fsp.mkdir(spool, { recursive: true });
  await fsp.mkdir(logsDir, { recursive: true });
  const pidFile = path.join(dir, 'ejabberd.pid');
  const startOut = path.join(dir, 'ejabberdctl-start.out');
  // Unique node name per environment (epmd is shared by every Erlang node on the machine).
  const node = `hermod${process.pid}n${envNo}r${randomBytes(2).toString('hex')}@localhost`;
  const ctl = ['--config-dir', dir, '--spool', spool, '--logs', logsDir, '--node', node];

  const s: ServerState = {
    info: makeInfo('ejabberd', BETA_DOMAIN, ip, ctx.opts.extraComponents ?? [], () => s.pid),
    dir,
    pid: undefined,
    logs: [startOut, path.join(logsDir, 'ejabberd.log'), path.join(logsDir, 'error.log')],
    findPid: () => s.pid ?? findBeamPid(node),
    async start() {
      if (s.pid !== undefined && isAlive(s.pid)) throw new Error('ejabberd is already running');
      await fsp.rm(pidFile, { force: true });
      const t0 = Date.now();
      // ejabberdctl (as root) su's to the ejabberd user and runs `erl -detached`: the beam VM
      // daemonizes and keeps the private mount namespace with our hosts file.
      const r = await run(
        'unshare',
        ['-m', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec ejabberdctl "$@" start', ctx.hostsFile, ...ctl],
        { timeoutMs: READY_TIMEOUT_MS },
      );
      await fsp.appendFile(startOut, r.output);
      if (r.code !== 0) {
        throw new Error(`ejabberdctl start failed (code ${r.code})\n${s.logs.map((f) => tail(f)).join('\n')}`);
      }
      let seenAt = Date.now();
      let seen = false;
      await waitReady(s, () => {
        if (s.pid === undefined || !isAlive(s.pid)) {
          const fromFile = Number(fs.existsSync(pidFile) ? fs.readFileSync(pidFile, 'utf8').trim() : NaN);
          s.pid = fromFile > 0 ? fromFile : findBeamPid(node);
          if (s.pid !== undefined && !isAlive(s.pid)) s.pid = undefined;
        }
        if (s.pid !== undefined) {
          seen = true;
          seenAt = Date.now();
          return undefined;
        }
        // No beam: it crashed (e.g. config error) or has not shown up yet.
        if (seen || Date.now() - seenAt > 5000) return `beam VM for node ${node} is not running`;
        return undefined;
      });
      // Listeners are up; the pidfile is written by ejabberd_app at about the same time.
      for (let i = 0; i < 40 && !fs.existsSync(pidFile); i++) await sleep(25);
      if (fs.existsSync(pidFile)) s.pid = Number(fs.readFileSync(pidFile, 'utf8').trim()) || s.pid;
      ctx.log(`ejabberd ${s.info.domain} on ${ip} up in ${Date.now() - t0} ms (node ${node}, pid ${s.pid})`);
    },
    async stop() {
      const pid = s.findPid();
      if (pid === undefined) return;
      const t0 = Date.now();
      // SIGTERM makes the Erlang VM run init:stop() (clean ejabberd/mnesia shutdown); this avoids
      // booting another VM for `ejabberdctl stop`. SIGKILL if that hangs.
      if (!(await terminate(pid))) throw new Error(`ejabberd beam pid ${pid} did not die`);
      s.pid = undefined;
      ctx.log(`ejabberd stopped in ${Date.now() - t0} ms`);
    },
    async register(user, password) {
      // Right after the ports open, ejabberd_ctl may not accept commands yet: retry briefly.
      const deadline = Date.now() + 15_000;
      for (;;) {
        const r = await run('ejabberdctl', [...ctl, 'register', user, s.info.domain, password], { cwd: spool });
        if (r.code === 0) return;
        const transient = /nodedown|not running|RPC|Failed RPC|badrpc|unknown command/i.test(r.output);
        if (!transient || Date.now() > deadline) {
          throw new Error(`ejabberdctl register ${user}@${s.info.domain} failed (${r.code}): ${r.output}`);
        }
        await sleep(200);
      }
    },
  };

  const cookie = randomBytes(16).toString('hex');
  // Sourced by ejabberdctl (it reads CONFIG_DIR/ejabberdctl.cfg and exports these). Private
  // cookie: no dependence on ~ejabberd/.erlang.cookie. Erlang distribution on loopback only.
  await fsp.writeFile(
    path.join(dir, 'ejabberdctl.cfg'),
    [
      `ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -setcookie ${cookie} -kernel inet_dist_use_interface {127,0,0,1}"`,
      'ERL_EPMD_ADDRESS=127.0.0.1',
      `EJABBERD_PID_PATH=${pidFile}`,
      'EJABBERD_BYPASS_WARNINGS=true',
      '',
    ].join('\n'),
  );
  // ejabberdctl points ERL_INETRC at CONFIG_DIR/inetrc; same as Debian's: hosts file, then libc.
  await fsp.writeFile(
    path.join(dir, 'inetrc'),
    '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost","hostalias"]}.\n{file, resolv, "/etc/resolv.conf"}.\n',
  );
  const snippet = await fsp.readFile(EJABBERD_SNIPPET, 'utf8');
  const service = renderEjabberdSnippet(snippet, ip, [
    { jid: s.info.componentJid, secret: s.info.componentSecret },
    ...s.info.extraComponents,
  ]);
  await fsp.mkdir(path.join(dir, 'upload'), { recursive: true });
  const privilege = ctx.opts.privileges ? renderEjabberdPrivilegeSnippet(await fsp.readFile(EJABBERD_PRIVILEGE_SNIPPET, 'utf8'), s.info.componentJid) : undefined;
  await fsp.writeFile(path.join(dir, 'ejabberd.yml'), ejabberdConfig(ctx, s.info, service, dir, privilege));
  const { uid, gid } = ejabberdUser();
  await chownTree(dir, uid, gid);
  await fsp.chmod(dir, 0o700);
  return s;
}

// ---------------------------------------------------------------------------------------------
// environment + emergency cleanup if the process dies

interface Live {
  killNow(): void;
}
const live = new Set<Live>();
let envCounter = 0;

function onExit(): void {
  for (const e of [...live]) e.killNow();
}
function onSignal(sig: NodeJS.Signals): void {
  onExit();
  uninstallHandlers();
  // Re-raise so the process still dies of the signal unless someone else handles it.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}
const sigHandlers = new Map<NodeJS.Signals, () => void>();
function installHandlers(): void {
  if (sigHandlers.size) return;
  process.on('exit', onExit);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]) {
    const h = () => onSignal(sig);
    sigHandlers.set(sig, h);
    process.on(sig, h);
  }
}
function uninstallHandlers(): void {
  process.off('exit', onExit);
  for (const [sig, h] of sigHandlers) process.off(sig, h);
  sigHandlers.clear();
}

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
  const ctx: Ctx = { dir, hostsFile, opts, log };

  const servers: ServerState[] = [];
  let stopping: Promise<void> | undefined;
  const keep = process.env.HERMOD_KEEP_TMP === '1';

  const liveEntry: Live = {
    killNow() {
      // Synchronous last resort (process exit/signal): SIGKILL by PID, remove the dir.
      for (const s of servers) signal(s.findPid(), 'SIGKILL');
      if (!keep) {
        try {
          fs.rmSync(dir, { recursive: true, force: true });
        } catch {
          /* ignore */
        }
      }
      live.delete(liveEntry);
    },
  };

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
      live.delete(liveEntry);
      if (live.size === 0) uninstallHandlers();
      log(`environment stopped in ${Date.now() - t1} ms`);
    })().catch(() => {});
    return stopping;
  };

  live.add(liveEntry);
  installHandlers();

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
