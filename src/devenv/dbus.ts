// A private D-Bus session daemon for tests and the demo: `dbus-daemon --session --fork` listening
// on a unix socket path in a temp dir (a path, not an abstract socket, so dbus-next needs no
// native module), stopped by its PID. `emit` sends a signal with the real `dbus-send`, exactly as
// midgard-core sends Notified (object path, interface, member, one string argument).

import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface DbusDaemon {
  address: string;
  pid: number;
  /** Sends `Notified(s)` with dbus-send. */
  emit(objectPath: string, text: string, iface?: string, member?: string): Promise<void>;
  stop(): Promise<void>;
  /** Starts it again on the same address (after stop). */
  restart(): Promise<void>;
}

async function launch(socket: string): Promise<{ address: string; pid: number }> {
  const { stdout } = await run('dbus-daemon', ['--session', '--fork', '--print-address=1', '--print-pid=1', `--address=unix:path=${socket}`], { timeout: 10_000 });
  const [address, pid] = stdout.trim().split('\n');
  if (!address || !pid || !/^\d+$/.test(pid.trim())) throw new Error(`dbus-daemon printed ${JSON.stringify(stdout)}`);
  return { address: address.trim(), pid: Number(pid.trim()) };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function startDbus(dir: string): Promise<DbusDaemon> {
  await mkdir(dir, { recursive: true });
  const socket = path.join(dir, 'bus');
  let current = await launch(socket);
  const daemon: DbusDaemon = {
    get address() {
      return current.address;
    },
    get pid() {
      return current.pid;
    },
    async emit(objectPath, text, iface = 'org.midgardproject.notifier', member = 'Notified') {
      // dbus-send takes `string:VALUE` as one argv entry: no shell, any XML passes unchanged.
      await run('dbus-send', [`--bus=${current.address}`, '--type=signal', objectPath, `${iface}.${member}`, `string:${text}`], { timeout: 10_000 });
    },
    async stop() {
      const { pid } = current;
      if (!alive(pid)) return;
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    },
    async restart() {
      current = await launch(socket);
    },
  };
  return daemon;
}
