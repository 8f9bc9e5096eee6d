// The load generator: a pool of receiver connections (half on each server), one publisher per
// server, and the two measurements every peer gets — fan-out (P publishes to a node with S
// subscribers, as fast as a window of in-flight publish IQs allows) and latency (publishes at a
// fixed rate). The same code drives Hermod, the servers' own pub/sub and the ceiling component.
//
// Receivers never parse XML trees: a notification is recognised by the payload marker
// "urn:bench:<seq>" and timed with performance.now() on arrival. Every (receiver, publish) pair
// is tracked, so lost and duplicated notifications are counted exactly.

import type { ServerInfo, XmppEnv } from '../../src/devenv/index.ts';
import { cpuSeconds, machineBusySeconds, sleep } from './procs.ts';
import { RawClient } from './raw-xmpp.ts';
import { percentiles, type Percentiles } from './stats.ts';
import { escapeXml } from './xml-stream.ts';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_OWNER = 'http://jabber.org/protocol/pubsub#owner';
export const PASSWORD = 'bench-pw';
const MARKER = 'urn:bench:';

export type ServerKind = 'prosody' | 'ejabberd';
export type ServiceKind = 'hermod' | 'native' | 'ceiling';

export interface Peer {
  /** e.g. "hermod@prosody" */
  id: string;
  service: ServiceKind;
  server: ServerKind;
  /** The pub/sub service's JID. */
  jid: string;
  /** The separate process to account CPU to (Hermod, ceiling); undefined for a native service. */
  pid?: () => number | undefined;
}

export const PEER_LABEL: Record<ServiceKind, string> = {
  hermod: 'Hermod',
  native: 'native pub/sub',
  ceiling: 'ceiling (bare component)',
};

const SUMMARY = 'Benchmark entry: a short Atom entry standing in for a document change notification, '.repeat(2);
let seqCounter = 1;

/** The published payload (~420 bytes): an Atom entry whose id carries the sequence number. */
export function payload(seq: number): string {
  return (
    `<entry xmlns='http://www.w3.org/2005/Atom'><id>${MARKER}${seq}</id><title>Entry ${seq}</title>` +
    `<updated>2024-01-01T00:00:00Z</updated><summary>${SUMMARY}</summary></entry>`
  );
}

export const publishXml = (node: string, seq: number): string =>
  `<pubsub xmlns='${NS_PUBSUB}'><publish node='${escapeXml(node)}'><item id='i${seq}'>${payload(seq)}</item></publish></pubsub>`;

/** The sequence number in a notification, or -1. The receivers' whole per-message work. */
export function seqOf(xml: string): number {
  const i = xml.indexOf(MARKER);
  if (i === -1) return -1;
  let n = 0;
  for (let j = i + MARKER.length; j < xml.length; j++) {
    const c = xml.charCodeAt(j) - 48;
    if (c < 0 || c > 9) break;
    n = n * 10 + c;
  }
  return n;
}

/** Reserves `count` fresh sequence numbers (unique over the whole process). */
export function reserveSeqs(count: number): number {
  const base = seqCounter;
  seqCounter += count;
  return base;
}

/** One measured run: which receiver got which publish when. */
export class Tracker {
  readonly sentAt: Float64Array;
  readonly ackAt: Float64Array;
  readonly recvAt: Float64Array;
  private readonly slot: Int32Array;
  received = 0;
  duplicates = 0;
  stale = 0;
  firstRecv = 0;
  lastRecv = 0;
  lastAck = 0;
  /** Publish IQs sent, and answered (result, error or timeout). */
  sent = 0;
  settled = 0;
  iqErrors = 0;
  firstIqError: string | undefined;

  constructor(
    readonly seqBase: number,
    readonly publishes: number,
    receiverIndexes: number[],
    poolSize: number,
  ) {
    this.sentAt = new Float64Array(publishes).fill(NaN);
    this.ackAt = new Float64Array(publishes).fill(NaN);
    this.recvAt = new Float64Array(publishes * receiverIndexes.length).fill(NaN);
    this.slot = new Int32Array(poolSize).fill(-1);
    receiverIndexes.forEach((p, i) => (this.slot[p] = i));
  }

  get receivers(): number {
    return this.recvAt.length / Math.max(1, this.publishes);
  }

  get expected(): number {
    return this.recvAt.length;
  }

  record(poolIndex: number, seq: number, now: number): void {
    const k = seq - this.seqBase;
    const r = this.slot[poolIndex] as number;
    if (k < 0 || k >= this.publishes || r < 0) {
      this.stale++;
      return;
    }
    const cell = r * this.publishes + k;
    if (this.recvAt[cell] === this.recvAt[cell]) {
      this.duplicates++;
      return;
    }
    this.recvAt[cell] = now;
    this.received++;
    if (this.firstRecv === 0) this.firstRecv = now;
    this.lastRecv = now;
  }

  /** Receivers that got none of the notifications (their subscription was not in effect). */
  silentReceivers(): number {
    const P = this.publishes;
    let silent = 0;
    for (let r = 0; r < this.receivers; r++) {
      let any = false;
      for (let k = 0; k < P && !any; k++) any = this.recvAt[r * P + k] === this.recvAt[r * P + k];
      if (!any) silent++;
    }
    return silent;
  }

  /** Publish→notification latencies (ms) of publishes k >= fromK. */
  latencies(fromK = 0): Float64Array {
    const out = new Float64Array(this.recvAt.length);
    let n = 0;
    const P = this.publishes;
    for (let cell = 0; cell < this.recvAt.length; cell++) {
      const k = cell % P;
      if (k < fromK) continue;
      const t = this.recvAt[cell] as number;
      if (t === t) out[n++] = t - (this.sentAt[k] as number);
    }
    return out.subarray(0, n);
  }

  iqRtts(fromK = 0): Float64Array {
    const out = new Float64Array(this.publishes);
    let n = 0;
    for (let k = fromK; k < this.publishes; k++) {
      const a = this.ackAt[k] as number;
      if (a === a) out[n++] = a - (this.sentAt[k] as number);
    }
    return out.subarray(0, n);
  }

  /** Waits until every expected notification arrived, nothing moved for quietMs, or capMs passed. */
  async waitComplete(quietMs: number, capMs: number, start: number, onProgress?: () => void): Promise<'complete' | 'quiet' | 'cap'> {
    const cap = start + capMs;
    let seen = -1;
    for (;;) {
      const now = performance.now();
      if (this.received !== seen) {
        seen = this.received;
        onProgress?.();
      }
      if (this.received >= this.expected) return 'complete';
      const last = Math.max(this.lastRecv, this.lastAck, start);
      // quiet: nothing arrived for quietMs and no publish is still waiting for its answer
      if (now - last > quietMs && this.settled >= this.sent) return 'quiet';
      if (now > cap) return 'cap';
      await sleep(20);
    }
  }
}

export interface PoolOptions {
  /** Receiver connections per server. */
  perServer: number;
  /** Resources per account (connections = accounts × resources). */
  resourcesPerAccount: number;
  log: (msg: string) => void;
}

/** Receivers on both servers plus a publisher per server; all raw-socket c2s sessions. */
export class Pool {
  readonly receivers: RawClient[] = [];
  readonly onServer: Record<ServerKind, number[]> = { prosody: [], ejabberd: [] };
  readonly publishers = {} as Record<ServerKind, RawClient>;
  current: Tracker | undefined;
  closedDuringRun = 0;
  /** Messages that arrived outside any run or without the marker. */
  otherMessages = 0;

  private constructor(private readonly env: XmppEnv) {}

  static async create(env: XmppEnv, o: PoolOptions, nativeAdmin: string): Promise<Pool> {
    const pool = new Pool(env);
    const alpha = env.alpha as ServerInfo;
    const beta = env.beta as ServerInfo;
    const accounts = Math.ceil(o.perServer / o.resourcesPerAccount);
    const t0 = performance.now();
    const jobs: Array<() => Promise<void>> = [];
    for (const server of [alpha, beta]) {
      jobs.push(() => env.register(server, 'pub', PASSWORD));
      for (let a = 0; a < accounts; a++) jobs.push(() => env.register(server, `s${a}`, PASSWORD));
    }
    await runLimited(jobs, 4);
    o.log(`registered ${jobs.length} accounts in ${Math.round(performance.now() - t0)} ms (native pub/sub admin: ${nativeAdmin})`);
    const t1 = performance.now();
    for (const [kind, server] of [['prosody', alpha], ['ejabberd', beta]] as const) {
      pool.publishers[kind] = await RawClient.login({ service: server.c2s, domain: server.domain, user: 'pub', password: PASSWORD, resource: 'publisher' });
      pool.publishers[kind].onMessage = () => pool.otherMessages++;
    }
    const logins: Array<() => Promise<void>> = [];
    for (const [kind, server] of [['prosody', alpha], ['ejabberd', beta]] as const) {
      for (let i = 0; i < o.perServer; i++) {
        const account = `s${Math.floor(i / o.resourcesPerAccount)}`;
        const resource = `r${i % o.resourcesPerAccount}`;
        const index = pool.receivers.length;
        pool.receivers.push(undefined as unknown as RawClient);
        pool.onServer[kind].push(index);
        logins.push(async () => {
          const c = await RawClient.login({ service: server.c2s, domain: server.domain, user: account, password: PASSWORD, resource });
          c.onMessage = (xml) => {
            const seq = seqOf(xml);
            const run = pool.current;
            if (seq < 0 || !run) pool.otherMessages++;
            else run.record(index, seq, performance.now());
          };
          c.onClose(() => {
            if (pool.current) pool.closedDuringRun++;
          });
          pool.receivers[index] = c;
        });
      }
    }
    await runLimited(logins, 40);
    o.log(`${pool.receivers.length} receiver sessions online in ${Math.round(performance.now() - t1)} ms`);
    return pool;
  }

  /** S receivers: S/2 on Prosody, S/2 on ejabberd (the first of each). */
  select(S: number): number[] {
    const half = Math.floor(S / 2);
    if (half > this.onServer.prosody.length) throw new Error(`pool has only ${this.onServer.prosody.length} receivers per server, ${half} asked`);
    return [...this.onServer.prosody.slice(0, half), ...this.onServer.ejabberd.slice(0, S - half)];
  }

  async close(): Promise<void> {
    await Promise.all([...this.receivers, ...Object.values(this.publishers)].filter(Boolean).map((c) => c.close(2000)));
  }

  get envRef(): XmppEnv {
    return this.env;
  }
}

export async function runLimited(jobs: Array<() => Promise<unknown>>, limit: number): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(limit, jobs.length) }, async () => {
      while (next < jobs.length) {
        const job = jobs[next++] as () => Promise<unknown>;
        try {
          await job();
        } catch (err) {
          errors.push(err);
        }
      }
    }),
  );
  if (errors.length) throw errors.length === 1 ? errors[0] : new AggregateError(errors, `${errors.length} of ${jobs.length} jobs failed: ${String(errors[0])}`);
}

// ---------------------------------------------------------------------------------------------
// CPU accounting of the processes involved in a run

export interface CpuPids {
  loadgen: number;
  peer?: number;
  prosody?: number;
  ejabberd?: number;
}

export function cpuPids(pool: Pool, peer: Peer): CpuPids {
  const env = pool.envRef;
  const p = peer.pid?.();
  return {
    loadgen: process.pid,
    ...(p !== undefined ? { peer: p } : {}),
    ...(env.alpha?.pid() !== undefined ? { prosody: env.alpha.pid() } : {}),
    ...(env.beta?.pid() !== undefined ? { ejabberd: env.beta.pid() } : {}),
  };
}

export interface CpuSample {
  at: number;
  cpu: Record<string, number>;
}

export function sampleCpu(pids: CpuPids | Record<string, number | undefined>): CpuSample {
  const cpu: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) cpu[k] = cpuSeconds(pid as number | undefined);
  cpu.machine = machineBusySeconds();
  return { at: performance.now(), cpu };
}

/**
 * CPU use in % of one core per process between two samples; "other" is what the rest of the
 * machine (processes not part of the benchmark) used meanwhile — a noise indicator.
 */
export function cpuPercent(a: CpuSample, b: CpuSample): Record<string, number> {
  const out: Record<string, number> = {};
  const wall = (b.at - a.at) / 1000;
  let ours = 0;
  for (const k of Object.keys(a.cpu)) {
    const d = (b.cpu[k] as number) - (a.cpu[k] as number);
    if (k !== 'machine' && Number.isFinite(d)) ours += d;
    if (k !== 'machine') out[k] = (d / wall) * 100;
  }
  out.other = Math.max(0, (((b.cpu.machine as number) - (a.cpu.machine as number) - ours) / wall) * 100);
  return out;
}

// ---------------------------------------------------------------------------------------------
// node setup

async function createNode(pool: Pool, peer: Peer, node: string): Promise<void> {
  await pool.publishers[peer.server].iq('set', peer.jid, `<pubsub xmlns='${NS_PUBSUB}'><create node='${escapeXml(node)}'/></pubsub>`);
}

/**
 * 'first-then-parallel': one subscription on its own, then the rest 64 at a time. Hermod (up to
 * at least 229d7b2) loses subscriptions that arrive concurrently at a node whose state is not cached yet
 * (PubsubService.load() races: see docs/PERFORMANCE.md), so the measured runs let the first
 * subscription load the node; 'parallel' is used by the check that reports that loss.
 */
export type SubscribeMode = 'first-then-parallel' | 'parallel';

async function subscribeAll(pool: Pool, peer: Peer, node: string, indexes: number[], mode: SubscribeMode = 'first-then-parallel'): Promise<void> {
  const job = (i: number) => async (): Promise<void> => {
    const c = pool.receivers[i] as RawClient;
    await c.iq('set', peer.jid, `<pubsub xmlns='${NS_PUBSUB}'><subscribe node='${escapeXml(node)}' jid='${escapeXml(c.jid)}'/></pubsub>`, 30_000);
  };
  const rest = mode === 'parallel' ? indexes : indexes.slice(1);
  if (mode !== 'parallel' && indexes.length > 0) await job(indexes[0] as number)();
  await runLimited(rest.map(job), 64);
}

async function deleteNode(pool: Pool, peer: Peer, node: string): Promise<void> {
  try {
    await pool.publishers[peer.server].iq('set', peer.jid, `<pubsub xmlns='${NS_OWNER}'><delete node='${escapeXml(node)}'/></pubsub>`, 30_000);
  } catch {
    /* best effort */
  }
}

function publishOne(pool: Pool, peer: Peer, node: string, t: Tracker, k: number): Promise<void> {
  const seq = t.seqBase + k;
  t.sentAt[k] = performance.now();
  t.sent++;
  return pool.publishers[peer.server].iq('set', peer.jid, publishXml(node, seq), 60_000).then(
    () => {
      const now = performance.now();
      t.ackAt[k] = now;
      t.lastAck = now;
      t.settled++;
    },
    (err: unknown) => {
      t.settled++;
      t.iqErrors++;
      t.firstIqError ??= String(err).slice(0, 400);
      t.lastAck = performance.now();
    },
  );
}

// ---------------------------------------------------------------------------------------------
// fan-out

export interface FanoutParams {
  subscribeMode?: SubscribeMode;
  /** Called when the node is set up and the first publish is about to be sent. */
  onPublishStart?: () => void;
  subscribers: number;
  publishes: number;
  /** Publish IQs in flight at once. */
  window: number;
  quietMs: number;
  capMs: number;
}

export interface FanoutResult {
  peer: string;
  service: ServiceKind;
  server: ServerKind;
  subscribers: number;
  publishes: number;
  window: number;
  expected: number;
  delivered: number;
  lost: number;
  duplicates: number;
  ended: string;
  /** First publish sent → last notification received. */
  durationMs: number;
  deliveriesPerSec: number;
  /** First publish sent → last publish acknowledged. */
  publishPhaseMs: number;
  latencyMs: Percentiles;
  iqRttMs: Percentiles;
  /** % of one core per process over the active part of the run; "other" = the rest of the machine. */
  cpuPct: Record<string, number>;
  /** Subscribers that received nothing at all (subscription not in effect), within `lost`. */
  silentReceivers: number;
  iqErrors: number;
  firstIqError?: string;
  closedConnections: number;
}

export async function runFanout(pool: Pool, peer: Peer, p: FanoutParams): Promise<FanoutResult> {
  const node = `fanout-${p.subscribers}-${Math.random().toString(36).slice(2, 8)}`;
  await createNode(pool, peer, node);
  const indexes = pool.select(p.subscribers);
  await subscribeAll(pool, peer, node, indexes, p.subscribeMode);
  await sleep(300);
  const t = new Tracker(reserveSeqs(p.publishes), p.publishes, indexes, pool.receivers.length);
  pool.closedDuringRun = 0;
  pool.current = t;
  const pids = cpuPids(pool, peer);
  const cpu0 = sampleCpu(pids);
  p.onPublishStart?.();
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let next = 0;
    let inFlight = 0;
    const pump = (): void => {
      while (inFlight < p.window && next < p.publishes) {
        inFlight++;
        void publishOne(pool, peer, node, t, next++).then(() => {
          inFlight--;
          if (next < p.publishes) pump();
          else if (inFlight === 0) resolve();
        });
      }
    };
    pump();
  });
  let cpu1 = cpu0;
  const ended = await t.waitComplete(p.quietMs, p.capMs, t0, () => (cpu1 = sampleCpu(pids)));
  pool.current = undefined;
  await deleteNode(pool, peer, node);
  const durationMs = t.lastRecv - t0;
  return {
    peer: peer.id,
    service: peer.service,
    server: peer.server,
    subscribers: p.subscribers,
    publishes: p.publishes,
    window: p.window,
    expected: t.expected,
    delivered: t.received,
    lost: t.expected - t.received,
    duplicates: t.duplicates,
    ended,
    durationMs,
    deliveriesPerSec: t.received / (durationMs / 1000),
    publishPhaseMs: t.lastAck - t0,
    latencyMs: percentiles(t.latencies()),
    iqRttMs: percentiles(t.iqRtts()),
    cpuPct: cpuPercent(cpu0, cpu1),
    silentReceivers: t.silentReceivers(),
    iqErrors: t.iqErrors,
    ...(t.firstIqError ? { firstIqError: t.firstIqError } : {}),
    closedConnections: pool.closedDuringRun,
  };
}

// ---------------------------------------------------------------------------------------------
// latency at a fixed publish rate

export interface LatencyParams {
  subscribers: number;
  rate: number;
  durationS: number;
  /** Leading fraction of publishes not counted (warm-up). */
  warmup: number;
  quietMs: number;
  capMs: number;
}

export interface LatencyResult {
  peer: string;
  service: ServiceKind;
  server: ServerKind;
  subscribers: number;
  rate: number;
  achievedRate: number;
  publishes: number;
  counted: number;
  expected: number;
  delivered: number;
  lost: number;
  ended: string;
  latencyMs: Percentiles;
  iqRttMs: Percentiles;
  maxInFlight: number;
  cpuPct: Record<string, number>;
  silentReceivers: number;
  iqErrors: number;
  firstIqError?: string;
  closedConnections: number;
}

export async function runLatency(pool: Pool, peer: Peer, p: LatencyParams): Promise<LatencyResult> {
  const node = `latency-${p.rate}-${Math.random().toString(36).slice(2, 8)}`;
  await createNode(pool, peer, node);
  const indexes = pool.select(p.subscribers);
  await subscribeAll(pool, peer, node, indexes);
  await sleep(300);
  const P = Math.round(p.rate * p.durationS);
  const warm = Math.floor(P * p.warmup);
  const t = new Tracker(reserveSeqs(P), P, indexes, pool.receivers.length);
  pool.closedDuringRun = 0;
  pool.current = t;
  const pids = cpuPids(pool, peer);
  const cpu0 = sampleCpu(pids);
  const t0 = performance.now();
  let maxInFlight = 0;
  let lastSent = t0;
  await new Promise<void>((resolve) => {
    let next = 0;
    const tick = (): void => {
      const now = performance.now();
      const due = Math.min(P, Math.floor(((now - t0) * p.rate) / 1000) + 1);
      while (next < due) {
        void publishOne(pool, peer, node, t, next++);
        lastSent = performance.now();
      }
      maxInFlight = Math.max(maxInFlight, pool.publishers[peer.server].pendingIqs);
      if (next < P) setTimeout(tick, Math.max(0, t0 + (next * 1000) / p.rate - performance.now()));
      else resolve();
    };
    tick();
  });
  let cpu1 = cpu0;
  const ended = await t.waitComplete(p.quietMs, p.capMs, t0, () => (cpu1 = sampleCpu(pids)));
  pool.current = undefined;
  await deleteNode(pool, peer, node);
  const lat = t.latencies(warm);
  return {
    peer: peer.id,
    service: peer.service,
    server: peer.server,
    subscribers: p.subscribers,
    rate: p.rate,
    achievedRate: (P - 1) / ((lastSent - t0) / 1000),
    publishes: P,
    counted: P - warm,
    expected: t.expected,
    delivered: t.received,
    lost: t.expected - t.received,
    ended,
    latencyMs: percentiles(lat),
    iqRttMs: percentiles(t.iqRtts(warm)),
    maxInFlight,
    cpuPct: cpuPercent(cpu0, cpu1),
    silentReceivers: t.silentReceivers(),
    iqErrors: t.iqErrors,
    ...(t.firstIqError ? { firstIqError: t.firstIqError } : {}),
    closedConnections: pool.closedDuringRun,
  };
}
