// Who holds a TCP port: for the message when the devenv's servers cannot listen on their
// loopback address because something else already does (typically the system's own Prosody or
// ejabberd service, which listens on every address after `apt-get install`). Linux only: reads
// /proc/net/tcp{,6} and maps the listening socket's inode to a process through /proc/PID/fd.

import * as fs from 'node:fs';

/** A listening TCP socket that accepts connections to some address:port. */
export interface Listener {
  /** Local address it listens on: an IPv4 address, `0.0.0.0`, `::` or another IPv6 address. */
  address: string;
  port: number;
  inode: string;
  /** The process holding it, when /proc tells (root sees every process). */
  pid?: number;
  /** That process's command name (/proc/PID/comm). */
  command?: string;
}

const LISTEN = '0A';

/** /proc/net/tcp writes each 32-bit word in host byte order (little-endian on the machines we run on). */
function word(hex: string): number[] {
  const b = [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return b.reverse();
}

function decodeAddress(hex: string): string {
  if (hex.length === 8) return word(hex).join('.');
  if (/^0+$/.test(hex)) return '::';
  if (hex.startsWith('0000000000000000FFFF0000')) return word(hex.slice(24)).join('.');
  const words = [0, 8, 16, 24].flatMap((i) => word(hex.slice(i, i + 8)));
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((words[i] ?? 0) << 8) | (words[i + 1] ?? 0)).toString(16));
  return groups.join(':');
}

function readListeners(): Listener[] {
  const out: Listener[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const [local, , st] = [f[1], f[2], f[3]];
      const inode = f[9];
      if (!local || st !== LISTEN || !inode) continue;
      const [addr, port] = local.split(':');
      if (!addr || !port) continue;
      out.push({ address: decodeAddress(addr), port: parseInt(port, 16), inode });
    }
  }
  return out;
}

function ownerOf(inodes: Set<string>): Map<string, { pid: number; command: string }> {
  const found = new Map<string, { pid: number; command: string }>();
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return found;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (!inode || !inodes.has(inode) || found.has(inode)) continue;
      let command = '?';
      try {
        command = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        /* raced with exit */
      }
      found.set(inode, { pid: Number(pid), command });
    }
    if (found.size === inodes.size) break;
  }
  return found;
}

/**
 * The listening sockets that take connections to `ip` on any of `ports`: bound to `ip` itself
 * or to a wildcard address (`0.0.0.0`, `::`), with their process when it can be found.
 * Empty when /proc is not there.
 */
export function listenersOn(ip: string, ports: readonly number[]): Listener[] {
  const wanted = new Set(ports);
  const hits = readListeners().filter((l) => wanted.has(l.port) && (l.address === ip || l.address === '0.0.0.0' || l.address === '::'));
  const owners = ownerOf(new Set(hits.map((l) => l.inode)));
  return hits.map((l) => ({ ...l, ...owners.get(l.inode) }));
}

/**
 * One sentence saying who holds `ports` on `ip` and what to do, for the error when a devenv
 * server cannot start there. `server` names it ("Prosody (alpha.test)").
 */
export function describeBusyPorts(server: string, ip: string, ports: readonly number[]): string {
  const holders = listenersOn(ip, ports);
  const held = holders.length > 0 ? holders.map((l) => `${l.port} by ${l.command ?? 'an unknown process'}${l.pid !== undefined ? ` (pid ${l.pid})` : ''} listening on ${l.address}`).join(', ') : ports.join(', ');
  const wildcard = holders.find((l) => l.address !== ip);
  let advice = 'another Hermod demo, test or benchmark uses these addresses (they derive from the process id): run again, or stop it (ss -ltnp shows it)';
  if (wildcard) {
    const command = wildcard.command ?? '';
    const service = command === 'beam.smp' ? 'ejabberd' : /^(prosody|lua)/.test(command) ? 'prosody' : undefined;
    advice = `a server listening on every address takes these ports on all loopback addresses too: stop it${service ? ` (the system's own ${service} service? systemctl stop ${service})` : ''} or make it listen on one address, then run again`;
  }
  return `cannot start ${server} on ${ip}: ports already in use: ${held}; ${advice}`;
}
