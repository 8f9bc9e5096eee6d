// Restart to serving without an XMPP server, for repeating the scale scenario's restart
// measurement in seconds: runs the real `hermod start` (bin/hermod.js, as in production) on an
// existing data dir (a scale fill's, e.g. `bench/scale-fill.ts DIR 100000 1000000 100000
// pub@alpha.test 10 --direct`) against a minimal XEP-0114 acceptor in this process, and times
//   spawn → component connected (stream opened) → handshake → first items result
// where "first items result" is the scale scenario's probe (items max_items=1 on node 'big'),
// sent as soon as the handshake is accepted and again every 20 ms until a result comes back.
// Then SIGTERM → exit. The scale scenario measures the same through Prosody (its hop adds ~2 ms).
//   node --import tsx bench/restart.ts DATADIR [RUNS] [--cpu-prof DIR]
// Prints one JSON line per run, then a summary line.

import { mkdtemp, rm } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startHermodProcess } from '../src/devenv/hermod.ts';
import { cpuSeconds } from './lib/procs.ts';

const args = process.argv.slice(2);
const profAt = args.indexOf('--cpu-prof');
const cpuProfDir = profAt >= 0 ? path.resolve(args[profAt + 1] ?? '.') : undefined;
const [dataDirArg, runsArg = '3'] = profAt >= 0 ? args.filter((_, i) => i !== profAt && i !== profAt + 1) : args;
if (!dataDirArg) {
  process.stderr.write('usage: restart.ts DATADIR [RUNS] [--cpu-prof DIR]\n');
  process.exit(2);
}
const dataDir = path.resolve(dataDirArg);
const JID = 'scale.localhost';
const PROBE = (n: number): string =>
  `<iq type='get' id='probe${n}' from='pub@alpha.test/bench' to='${JID}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='big' max_items='1'/></pubsub></iq>`;

interface Marks {
  /** CPU seconds Hermod had used when its first items result came (user + system, 10 ms steps). */
  cpu?: number;
  connected?: number;
  handshake?: number;
  serving?: number;
}

/** A one-connection-at-a-time XEP-0114 acceptor (any secret) that probes with items requests once the handshake is done. */
async function acceptor(): Promise<{ port: number; next(pid: () => number | undefined): Promise<Marks>; close(): void }> {
  let pidOf: () => number | undefined = () => undefined;
  let waiting: ((m: Marks) => void) | undefined;
  let marks: Marks = {};
  const server = net.createServer((socket) => {
    let buf = '';
    let probes = 0;
    let timer: NodeJS.Timeout | undefined;
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.on('close', () => clearInterval(timer));
    socket.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (marks.connected === undefined && buf.includes('<stream:stream')) {
        marks.connected = performance.now();
        socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='${JID}' id='restart-probe'>`);
      }
      if (marks.handshake === undefined && /<handshake>[0-9a-f]+<\/handshake>/.test(buf)) {
        marks.handshake = performance.now();
        socket.write('<handshake/>');
        socket.write(PROBE(++probes));
        timer = setInterval(() => socket.write(PROBE(++probes)), 20);
      }
      if (marks.handshake !== undefined && marks.serving === undefined && /<iq[^>]*type=['"]result['"][^>]*id=['"]probe\d+['"]|<iq[^>]*id=['"]probe\d+['"][^>]*type=['"]result['"]/.test(buf)) {
        marks.serving = performance.now();
        marks.cpu = cpuSeconds(pidOf());
        clearInterval(timer);
        waiting?.(marks);
      }
      if (buf.includes('</stream:stream>')) socket.end('</stream:stream>');
      if (buf.length > 1 << 20) buf = buf.slice(-4096);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    next: (pid) =>
      new Promise((resolve) => {
        marks = {};
        pidOf = pid;
        waiting = resolve;
      }),
    close: () => server.close(),
  };
}

const runs = Number(runsArg);
const dir = await mkdtemp(path.join(tmpdir(), 'hermod-restart-'));
const accept = await acceptor();
const results: Array<{ connectedMs: number; handshakeMs: number; servingMs: number; cpuMsAtServing: number; stopMs: number }> = [];
try {
  for (let r = 0; r < runs; r++) {
    let pid: number | undefined;
    const served = accept.next(() => pid);
    const hermod = await startHermodProcess({
      name: 'hermod-restart',
      dir,
      dataDir,
      logLevel: 'info',
      waitOnline: false,
      server: { componentJid: JID, componentSecret: 'secret', componentService: `xmpp://127.0.0.1:${accept.port}` },
      extra: { limits: { publishRate: false } },
      ...(cpuProfDir ? { cpuProfDir } : {}),
    });
    pid = hermod.pid;
    const t0 = hermod.startedAt;
    const timeout = setTimeout(() => void hermod.kill(), 60_000);
    const marks = await served;
    clearTimeout(timeout);
    const s0 = performance.now();
    await hermod.stop();
    const line = {
      run: r + 1,
      connectedMs: Math.round((marks.connected ?? NaN) - t0),
      handshakeMs: Math.round((marks.handshake ?? NaN) - t0),
      servingMs: Math.round((marks.serving ?? NaN) - t0),
      cpuMsAtServing: Math.round((marks.cpu ?? NaN) * 1000),
      stopMs: Math.round(performance.now() - s0),
    };
    results.push(line);
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
} finally {
  accept.close();
  await rm(dir, { recursive: true, force: true });
}
const sorted = (f: (x: (typeof results)[number]) => number): number[] => results.map(f).sort((a, b) => a - b);
const median = (xs: number[]): number | undefined => xs[Math.floor(xs.length / 2)];
const serving = sorted((x) => x.servingMs);
const cpu = sorted((x) => x.cpuMsAtServing);
process.stdout.write(`${JSON.stringify({ done: true, dataDir, runs, servingMs: serving, median: median(serving), cpuMsAtServing: cpu, cpuMedian: median(cpu) })}\n`);
