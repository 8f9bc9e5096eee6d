// The load generator's own ceiling: how fast it can take notifications in, so that it is never
// the bottleneck unnoticed. Two figures, both through the exact receive path the scenarios use
// (StanzaSplitter -> dispatch -> seqOf -> Tracker.record):
//  - parse: Hermod-shaped notifications fed from memory in 64 KiB chunks (CPU cost only);
//  - socket: a blaster in a worker thread (the machine's other core, like a server would be)
//    pushes the same messages over loopback TCP to 100 connections.

import { Worker } from 'node:worker_threads';
import { payload, reserveSeqs, seqOf, Tracker } from '../lib/loadgen.ts';
import { RawBare } from '../lib/raw-xmpp.ts';

export interface LoadgenParams {
  parseMessages: number;
  socketConnections: number;
  socketPerConnection: number;
}

export interface LoadgenResult {
  messageBytes: number;
  parse: { messages: number; ms: number; perSec: number; mbPerSec: number };
  socket: { connections: number; messages: number; received: number; ms: number; perSec: number; mbPerSec: number };
}

const message = (seq: number, to: string): string =>
  `<message from="pubsub.alpha.test" type="headline" id="n${seq.toString(36)}" to="${to}"><event xmlns="http://jabber.org/protocol/pubsub#event"><items node="fanout-1000"><item id="i${seq}" publisher="pub@alpha.test">${payload(seq)}</item></items></event></message>`;

function parseCeiling(n: number): LoadgenResult['parse'] & { messageBytes: number } {
  const base = reserveSeqs(n);
  const chunks: string[] = [];
  let chunk = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x'>";
  let bytes = 0;
  for (let k = 0; k < n; k++) {
    const m = message(base + k, 's0@alpha.test/r0');
    bytes += m.length;
    chunk += m;
    if (chunk.length >= 65536) {
      // cut at an arbitrary point so stanzas straddle chunks as they do on sockets
      chunks.push(chunk.slice(0, 65536));
      chunk = chunk.slice(65536);
    }
  }
  chunks.push(chunk);
  const t = new Tracker(base, n, [0], 1);
  const rx = RawBare.detached();
  rx.onMessage = (xml) => t.record(0, seqOf(xml), performance.now());
  const t0 = performance.now();
  for (const c of chunks) rx.feed(c);
  const ms = performance.now() - t0;
  if (t.received !== n) throw new Error(`loadgen parse self-test: ${t.received} of ${n} messages recognised`);
  return { messages: n, ms, perSec: n / (ms / 1000), mbPerSec: bytes / 1e6 / (ms / 1000), messageBytes: Math.round(bytes / n) };
}

const BLASTER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const { conns, perConn, seqBase, template } = workerData;
const sockets = [];
const server = net.createServer((s) => {
  s.setNoDelay(true);
  s.on('error', () => {});
  sockets.push(s);
  s.write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='blast' from='blaster'>");
  if (sockets.length === conns) parentPort.postMessage({ connected: true });
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }));
const parts = template.split('%SEQ%');
parentPort.on('message', (m) => {
  if (m.go) {
    sockets.forEach((s, i) => {
      const to = 'r' + i + '@alpha.test/x';
      let k = 0;
      const pump = () => {
        while (k < perConn) {
          let chunk = '';
          while (k < perConn && chunk.length < 65536) {
            const seq = seqBase + k++;
            chunk += parts.join(String(seq)).replace('%TO%', to);
          }
          if (!s.write(chunk)) { s.once('drain', pump); return; }
        }
      };
      pump();
    });
  }
  if (m.stop) { for (const s of sockets) s.destroy(); server.close(); parentPort.close(); }
});
`;

async function socketCeiling(conns: number, perConn: number): Promise<LoadgenResult['socket']> {
  const base = reserveSeqs(perConn);
  const template = message(0, '%TO%').replace(/i0"/, 'i%SEQ%"').replace('urn:bench:0', 'urn:bench:%SEQ%').replace('Entry 0', 'Entry %SEQ%');
  const worker = new Worker(BLASTER, { eval: true, workerData: { conns, perConn, seqBase: base, template } });
  const messages: Array<Record<string, unknown>> = [];
  let wake: (() => void) | undefined;
  worker.on('message', (m: Record<string, unknown>) => {
    messages.push(m);
    wake?.();
  });
  const waitFor = async (key: string, ms: number): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = messages.find((x) => key in x);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`loadgen blaster: no ${key} within ${ms} ms`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
  };
  const rxs: RawBare[] = [];
  try {
    const { port } = (await waitFor('port', 10_000)) as { port: number };
    const t = new Tracker(base, perConn, Array.from({ length: conns }, (_, i) => i), conns);
    for (let i = 0; i < conns; i++) {
      const rx = await RawBare.connect(`xmpp://127.0.0.1:${port}`);
      rx.onMessage = (xml) => t.record(i, seqOf(xml), performance.now());
      rxs.push(rx);
    }
    await waitFor('connected', 10_000);
    const bytes0 = rxs.reduce((s, r) => s + r.bytesIn, 0);
    const t0 = performance.now();
    worker.postMessage({ go: true });
    await t.waitComplete(3000, 120_000, t0);
    const ms = t.lastRecv - t0;
    const bytes = rxs.reduce((s, r) => s + r.bytesIn, 0) - bytes0;
    return { connections: conns, messages: conns * perConn, received: t.received, ms, perSec: t.received / (ms / 1000), mbPerSec: bytes / 1e6 / (ms / 1000) };
  } finally {
    for (const rx of rxs) rx.destroy();
    worker.postMessage({ stop: true });
    await Promise.race([new Promise((r) => worker.once('exit', r)), new Promise((r) => setTimeout(r, 3000))]);
    await worker.terminate();
  }
}

export async function runLoadgen(p: LoadgenParams): Promise<LoadgenResult> {
  parseCeiling(Math.min(20_000, p.parseMessages)); // warm the JIT
  const parse = parseCeiling(p.parseMessages);
  const socket = await socketCeiling(p.socketConnections, p.socketPerConnection);
  const { messageBytes, ...rest } = parse;
  return { messageBytes, parse: rest, socket };
}
