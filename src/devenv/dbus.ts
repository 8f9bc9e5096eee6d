// A private D-Bus session daemon for tests and the demo: `dbus-daemon --session --fork` listening
// on a unix socket path in a temp dir (a path, not an abstract socket, so dbus-next needs no
// native module), stopped by its PID. `emit` sends a signal with the real `dbus-send`, exactly as
// midgard-core sends Notified (object path, interface, member, one string argument).

import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { atEmergencyExit, run, signal, terminate } from './process.ts';

/** Runs a command (10 s at most); resolves to its stdout, throws with its output unless it exits 0. */
async function check(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`${cmd} failed (code ${r.code}): ${r.output}`);
  return r.stdout;
}

export interface DbusDaemon {
  address: string;
  pid: number;
  /** Sends `Notified(s)` with dbus-send. */
  emit(objectPath: string, text: string, iface?: string, member?: string): Promise<void>;
  /** `emit` as another user (setpriv; needs root and a bus started with `include`). */
  emitAs(user: { uid: number; gid: number }, objectPath: string, text: string): Promise<void>;
  stop(): Promise<void>;
  /** Starts it again on the same address (after stop). */
  restart(): Promise<void>;
}

async function launch(socket: string, configFile: string | undefined): Promise<{ address: string; pid: number }> {
  const config = configFile === undefined ? ['--session'] : [`--config-file=${configFile}`];
  const stdout = await check('dbus-daemon', [...config, '--fork', '--print-address=1', '--print-pid=1', `--address=unix:path=${socket}`]);
  const [address, pid] = stdout.trim().split('\n');
  if (!address || !pid || !/^\d+$/.test(pid.trim())) throw new Error(`dbus-daemon printed ${JSON.stringify(stdout)}`);
  return { address: address.trim(), pid: Number(pid.trim()) };
}

/** How startDbus runs the daemon. */
export interface DbusOptions {
  /**
   * Bus configuration files to include (policy files such as deploy/dbus/hermod-midgard.conf).
   * The bus then takes connections from every user (EXTERNAL authentication; `dir` is made
   * world-searchable), so a test can send as another user; without, it is a plain session bus.
   */
  include?: string[];
}

/** The configuration of a bus open to every local user, with `include` files after its own policy. */
function openBusConfig(socket: string, include: string[]): string {
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  return [
    '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">',
    '<busconfig>',
    '  <type>session</type>',
    `  <listen>unix:path=${esc(socket)}</listen>`,
    '  <auth>EXTERNAL</auth>',
    '  <policy context="default">',
    '    <allow user="*"/>',
    '    <allow send_destination="*" eavesdrop="true"/>',
    '    <allow eavesdrop="true"/>',
    '    <allow own="*"/>',
    '  </policy>',
    ...include.map((f) => `  <include>${esc(f)}</include>`),
    '</busconfig>',
    '',
  ].join('\n');
}

/** Starts a session dbus-daemon listening on `<dir>/bus`; throws with its output if it does not start. */
export async function startDbus(dir: string, options: DbusOptions = {}): Promise<DbusDaemon> {
  await mkdir(dir, { recursive: true });
  const socket = path.join(dir, 'bus');
  let configFile: string | undefined;
  if (options.include !== undefined) {
    configFile = path.join(dir, 'bus.conf');
    await writeFile(configFile, openBusConfig(socket, options.include));
    await chmod(dir, 0o755);
  }
  let current = await launch(socket, configFile);
  // dbus-send takes `string:VALUE` as one argv entry: no shell, any XML passes unchanged.
  const sendArgs = (objectPath: string, text: string, iface = 'org.midgardproject.notifier', member = 'Notified'): string[] => [`--bus=${current.address}`, '--type=signal', objectPath, `${iface}.${member}`, `string:${text}`];
  // The daemon forked away from us: SIGKILL it by PID if we exit before stop().
  atEmergencyExit(() => signal(current.pid, 'SIGKILL'));
  const daemon: DbusDaemon = {
    get address() {
      return current.address;
    },
    get pid() {
      return current.pid;
    },
    async emit(objectPath, text, iface = 'org.midgardproject.notifier', member = 'Notified') {
      await check('dbus-send', sendArgs(objectPath, text, iface, member));
    },
    async emitAs(user, objectPath, text) {
      await check('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', 'dbus-send', ...sendArgs(objectPath, text)]);
    },
    async stop() {
      await terminate(current.pid, 5_000);
    },
    async restart() {
      current = await launch(socket, configFile);
    },
  };
  return daemon;
}
