// Throughput of a Hermod cluster (issue 16): 1, 2 and 3 Hermod processes serve one component JID
// on ejabberd (which balances the component's traffic over their connections: stanza by stanza,
// `domain_balancing` random) and share one pouchdb-server store. One process runs on the same
// store backend (CouchDB, with its heartbeat, lease, changes feed and node locks) so that the
// ratio to it shows what the coordination between processes costs, not CouchDB against LevelDB.
// The subscribers and publishers are raw c2s sessions on ejabberd (bench/lib/raw-xmpp.ts).
//
//  - fan-out: P publishes (a window of W in flight, from one publisher) to a node with S
//    subscribers; notifications delivered per second, first publish to last notification.
//  - publish: K publishers, each with a window of w, over N nodes without subscribers (each
//    publisher cycles over its own N/K nodes; its publishes reach any process, so that several
//    processes publish to one node at once and its cluster-wide lock moves between them);
//    acknowledged publishes per second.
//
// Each run records the CPU seconds of every Hermod process, ejabberd and pouchdb-server: on a
// small machine the absolute figures flatten (the processes share the cores), so notifications
// (and publishes) per Hermod CPU-second are reported beside them. No assertions.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { clusterStatusOf, startXmppEnv, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { NS_OWNER, NS_PUBSUB, PASSWORD, publishXml, reserveSeqs, runLimited, seqOf, Tracker } from '../lib/loadgen.ts';
import { cpuSeconds, hermodSpawnFor, sleep, startBenchHermod } from '../lib/procs.ts';
import { RawClient } from '../lib/raw-xmpp.ts';
import { escapeXml } from '../lib/xml-stream.ts';
import { startBenchCouch } from '../lib/couch-docs.ts';

export interface ThroughputParams {
  /** Process counts, one cluster each (a fresh database). */
  processes: number[];
  /** Fan-out: subscribers of the node, publishes per run, publishes in flight, runs per process count. */
  subscribers: number;
  fanoutPublishes: number;
  window: number;
  reps: number;
  /** Publish throughput: publishers, nodes, publishes in all, in flight per publisher. */
  publishers: number;
  nodes: number;
  publishes: number;
  publisherWindow: number;
  leaseSeconds: number;
  /** Write each Hermod's V8 CPU profile into this folder at its exit (figures then include the profiler). */
  cpuProfDir?: string;
}

/** CPU seconds used during a run. */
export interface RunCpu {
  /** One per Hermod process. */
  hermods: number[];
  ejabberd: number;
  couch: number;
  /** The benchmark's own process (the load generator). */
  loadgen: number;
  wallS: number;
}

export interface FanoutRun {
  /** How the wait for the notifications ended: all there ('complete'), nothing more for 10 s ('quiet'), or the cap. */
  ended: string;
  expected: number;
  delivered: number;
  duplicates: number;
  iqErrors: number;
  firstIqError?: string;
  /** First publish sent → last notification received, ms. */
  durationMs: number;
  perSec: number;
  cpu: RunCpu;
}

export interface PublishRun {
  publishes: number;
  acked: number;
  iqErrors: number;
  firstIqError?: string;
  /** First publish sent → last answer, ms. */
  durationMs: number;
  perSec: number;
  cpu: RunCpu;
}

export interface ThroughputResult {
  params: ThroughputParams;
  clusters: Array<{ processes: number; fanout: FanoutRun[]; publish: PublishRun }>;
}

interface Cpu0 {
  at: number;
  pids: Array<number | undefined>;
  s: number[];
}

function cpuStart(hermods: HermodProcess[], server: ServerInfo, couchPid: number | undefined): Cpu0 {
  const pids = [...hermods.map((h) => h.pid), server.pid(), couchPid, process.pid];
  return { at: performance.now(), pids, s: pids.map(cpuSeconds) };
}

function cpuSince(c: Cpu0, at = performance.now()): RunCpu {
  const d = c.pids.map((pid, i) => cpuSeconds(pid) - (c.s[i] as number));
  const n = c.pids.length;
  return { hermods: d.slice(0, n - 3), ejabberd: d[n - 3] as number, couch: d[n - 2] as number, loadgen: d[n - 1] as number, wallS: (at - c.at) / 1000 };
}

/** Runs `count` jobs with at most `window` in flight at once; resolves when all have settled. */
function pump(count: number, window: number, job: (k: number) => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    let next = 0;
    let inFlight = 0;
    if (count === 0) resolve();
    const more = (): void => {
      while (inFlight < window && next < count) {
        inFlight++;
        void job(next++).then(() => {
          inFlight--;
          if (next < count) more();
          else if (inFlight === 0) resolve();
        });
      }
    };
    more();
  });
}

/** Runs the scenario (servers started and stopped here). */
export async function runThroughput(params: ThroughputParams, log: (m: string) => void): Promise<ThroughputResult> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-cthroughput-'));
  const env = await startXmppEnv({ prosody: false });
  const couch = await startBenchCouch();
  const clients: RawClient[] = [];
  const hermods: HermodProcess[] = [];
  const result: ThroughputResult = { params, clusters: [] };
  try {
    const server = env.beta;
    if (!server) throw new Error('no ejabberd');
    const perAccount = 50;
    const accounts = Math.ceil(params.subscribers / perAccount);
    await runLimited(
      [...Array.from({ length: params.publishers }, (_, i) => `tpub${i}`), ...Array.from({ length: accounts }, (_, i) => `tsub${i}`)].map((u) => () => env.register(server, u, PASSWORD)),
      4,
    );
    const login = (user: string, resource: string): Promise<RawClient> => RawClient.login({ service: server.c2s, domain: server.domain, user, password: PASSWORD, resource, timeoutMs: 60_000 });
    const publishers: RawClient[] = [];
    for (let i = 0; i < params.publishers; i++) publishers.push(await login(`tpub${i}`, 'p'));
    const receivers: RawClient[] = new Array(params.subscribers);
    let current: Tracker | undefined;
    await runLimited(
      Array.from({ length: params.subscribers }, (_, i) => async () => {
        const c = await login(`tsub${Math.floor(i / perAccount)}`, `r${i % perAccount}`);
        c.onMessage = (xml) => {
          const seq = seqOf(xml);
          if (seq >= 0) current?.record(i, seq, performance.now());
        };
        receivers[i] = c;
      }),
      16,
    );
    clients.push(...publishers, ...receivers);
    const owner = publishers[0] as RawClient;
    const SVC = server.componentJid;
    const iq = (c: RawClient, child: string): Promise<string> => c.iq('set', SVC, `<pubsub xmlns='${NS_PUBSUB}'>${child}</pubsub>`, 60_000);

    for (const n of params.processes) {
      const store = { backend: 'couchdb', couchdb: { url: couch.url, db: `throughput${n}` } };
      for (let i = 0; i < n; i++) {
        hermods.push(await startBenchHermod({ ...hermodSpawnFor(server, `c${n}h${i + 1}`, dir), ...(params.cpuProfDir ? { cpuProfDir: params.cpuProfDir } : {}), extra: { store, cluster: { leaseSeconds: params.leaseSeconds } } }));
      }
      for (let t = Date.now(); ; await sleep(200)) {
        const status = await clusterStatusOf(hermods[0] as HermodProcess);
        if (status && status.members.filter((m) => m.alive).length === n && status.leases[0]?.holder) break;
        if (Date.now() - t > 60_000) throw new Error(`${n} Hermods: not all members in hermod status after 60 s`);
      }
      const fanout: FanoutRun[] = [];
      for (let rep = 0; rep < params.reps; rep++) {
        const node = `fan-${n}-${rep}`;
        await iq(owner, `<create node='${node}'/>`);
        const subscribe = (i: number) => async (): Promise<void> => {
          const c = receivers[i] as RawClient;
          await iq(c, `<subscribe node='${node}' jid='${escapeXml(c.jid)}'/>`);
        };
        await subscribe(0)();
        await runLimited(Array.from({ length: params.subscribers - 1 }, (_, i) => subscribe(i + 1)), 32);
        await sleep(500);
        const t = new Tracker(reserveSeqs(params.fanoutPublishes), params.fanoutPublishes, Array.from({ length: params.subscribers }, (_, i) => i), params.subscribers);
        current = t;
        const cpu0 = cpuStart(hermods, server, couch.pid());
        let cpu = cpuSince(cpu0);
        const t0 = performance.now();
        await pump(params.fanoutPublishes, params.window, (k) => {
          t.sentAt[k] = performance.now();
          return owner.iq('set', SVC, publishXml(node, t.seqBase + k), 60_000).then(
            () => void (t.lastAck = t.ackAt[k] = performance.now()),
            (err: unknown) => {
              t.iqErrors++;
              t.firstIqError ??= String(err).slice(0, 300);
            },
          );
        });
        const ended = await t.waitComplete(10_000, 180_000, t0, () => (cpu = cpuSince(cpu0)));
        current = undefined;
        const durationMs = t.lastRecv - t0;
        const run: FanoutRun = {
          ended,
          expected: t.expected,
          delivered: t.received,
          duplicates: t.duplicates,
          iqErrors: t.iqErrors,
          ...(t.firstIqError ? { firstIqError: t.firstIqError } : {}),
          durationMs,
          perSec: t.received / (durationMs / 1000),
          cpu,
        };
        fanout.push(run);
        log(`cluster-throughput ${n} process(es), fan-out run ${rep + 1}: ${run.delivered}/${run.expected} notifications, ${run.perSec.toFixed(0)}/s, Hermod CPU ${run.cpu.hermods.map((s) => s.toFixed(1)).join(' + ')} s`);
        await owner.iq('set', SVC, `<pubsub xmlns='${NS_OWNER}'><delete node='${node}'/></pubsub>`, 60_000).catch(() => undefined);
      }

      // Publish throughput: K publishers over N nodes.
      const nodes = Array.from({ length: params.nodes }, (_, i) => `pub-${n}-${i}`);
      // Node i belongs to publisher i mod K (the default publish model lets only owners publish).
      for (const [i, node] of nodes.entries()) await iq(publishers[i % publishers.length] as RawClient, `<create node='${node}'/>`);
      const perPublisher = Math.ceil(params.publishes / params.publishers);
      let acked = 0;
      let iqErrors = 0;
      let firstIqError: string | undefined;
      let last = 0;
      const cpu0 = cpuStart(hermods, server, couch.pid());
      const t0 = performance.now();
      const seq0 = reserveSeqs(perPublisher * params.publishers);
      await Promise.all(
        publishers.map((c, j) =>
          pump(perPublisher, params.publisherWindow, (k) =>
            c.iq('set', SVC, publishXml(nodes[j + publishers.length * (k % Math.max(1, Math.floor(nodes.length / publishers.length)))] as string, seq0 + j * perPublisher + k), 60_000).then(
              () => void (acked++, (last = performance.now())),
              (err: unknown) => {
                iqErrors++;
                firstIqError ??= String(err).slice(0, 300);
                last = performance.now();
              },
            ),
          ),
        ),
      );
      const publish: PublishRun = {
        publishes: perPublisher * params.publishers,
        acked,
        iqErrors,
        ...(firstIqError ? { firstIqError } : {}),
        durationMs: last - t0,
        perSec: acked / ((last - t0) / 1000),
        cpu: cpuSince(cpu0, last),
      };
      log(`cluster-throughput ${n} process(es), publish: ${acked}/${publish.publishes} acknowledged, ${publish.perSec.toFixed(0)}/s, Hermod CPU ${publish.cpu.hermods.map((s) => s.toFixed(1)).join(' + ')} s`);
      result.clusters.push({ processes: n, fanout, publish });
      for (const h of hermods.splice(0)) await h.stop().catch(() => h.kill());
    }
  } finally {
    for (const h of hermods) await h.stop().catch(() => h.kill());
    await Promise.all(clients.filter(Boolean).map((c) => c.close(2000).catch(() => undefined)));
    await env.stop();
    await couch.destroy();
    await rm(dir, { recursive: true, force: true });
  }
  return result;
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const pct = (s: number, wallS: number): string => ((s / wallS) * 100).toFixed(0);

/** Notifications (or publishes) per Hermod CPU-second (all processes together). */
const perCpu = (count: number, cpu: RunCpu): number => count / sum(cpu.hermods);

/** The best fan-out run of a cluster (the least disturbed, on a shared machine). */
function bestFanout(c: ThroughputResult['clusters'][number]): FanoutRun | undefined {
  return [...c.fanout].sort((a, b) => b.perSec - a.perSec)[0];
}

/** The 2-process ÷ 1-process ratios (NaN when either is missing). */
export function throughputRatios(r: ThroughputResult): { fanout: number; fanoutPerCpu: number; publish: number; publishPerCpu: number } {
  const one = r.clusters.find((c) => c.processes === 1);
  const two = r.clusters.find((c) => c.processes === 2);
  const f1 = one && bestFanout(one);
  const f2 = two && bestFanout(two);
  return {
    fanout: f1 && f2 ? f2.perSec / f1.perSec : NaN,
    fanoutPerCpu: f1 && f2 ? perCpu(f2.delivered, f2.cpu) / perCpu(f1.delivered, f1.cpu) : NaN,
    publish: one && two ? two.publish.perSec / one.publish.perSec : NaN,
    publishPerCpu: one && two ? perCpu(two.publish.acked, two.publish.cpu) / perCpu(one.publish.acked, one.publish.cpu) : NaN,
  };
}

/** The Markdown section of the results. */
export function throughputReport(r: ThroughputResult): { md: string } {
  const p = r.params;
  const ratios = throughputRatios(r);
  const cpuCells = (cpu: RunCpu): string => `${cpu.hermods.map((s) => pct(s, cpu.wallS)).join(' / ')} | ${pct(cpu.ejabberd, cpu.wallS)} | ${pct(cpu.couch, cpu.wallS)}`;
  const lines = [
    '## Cluster: fan-out and publish throughput with 1, 2 and 3 processes',
    '',
    `Hermods on ejabberd (domain balancing: each stanza to any of them) sharing one pouchdb-server store; one process on the same CouchDB store, so the ratios show the coordination. ` +
      `Fan-out: ${p.fanoutPublishes} publishes (${p.window} in flight) to a node with ${p.subscribers} subscribers, best of ${p.reps}. ` +
      `Publish: ${p.publishers} publishers (${p.publisherWindow} in flight each) over ${p.nodes} nodes without subscribers, ${p.publishes} publishes. ` +
      'CPU in % of one core over the run; "per CPU-s": notifications (publishes) per CPU-second of all Hermod processes together.',
    '',
    '| processes | fan-out notifications/s | × 1 process | per Hermod CPU-s | × 1 process | lost / dup | Hermod CPU % (each) | ejabberd % | pouchdb % |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const one = r.clusters.find((c) => c.processes === 1);
  const f1 = one && bestFanout(one);
  for (const c of r.clusters) {
    const f = bestFanout(c);
    if (!f) continue;
    const k = perCpu(f.delivered, f.cpu);
    lines.push(
      `| ${c.processes} | ${f.perSec.toFixed(0)} | ${f1 ? (f.perSec / f1.perSec).toFixed(2) : '–'} | ${k.toFixed(0)} | ${f1 ? (k / perCpu(f1.delivered, f1.cpu)).toFixed(2) : '–'} | ${f.expected - f.delivered} / ${f.duplicates}${f.ended === 'complete' ? '' : ` (${f.ended})`} | ${cpuCells(f.cpu)} |`,
    );
  }
  lines.push('', '| processes | publishes acknowledged/s | × 1 process | per Hermod CPU-s | × 1 process | errors | Hermod CPU % (each) | ejabberd % | pouchdb % |', '|---|---|---|---|---|---|---|---|---|');
  for (const c of r.clusters) {
    const u = c.publish;
    const k = perCpu(u.acked, u.cpu);
    lines.push(
      `| ${c.processes} | ${u.perSec.toFixed(0)} | ${one ? (u.perSec / one.publish.perSec).toFixed(2) : '–'} | ${k.toFixed(0)} | ${one ? (k / perCpu(one.publish.acked, one.publish.cpu)).toFixed(2) : '–'} | ${u.iqErrors} | ${cpuCells(u.cpu)} |`,
    );
  }
  const verdict = Number.isNaN(ratios.fanout) ? 'not measured' : ratios.fanout >= 0.9 ? '**met**' : '**missed**';
  lines.push(
    '',
    `Target: with 2 processes, fan-out ≥ 0.9× of one process: ${ratios.fanout.toFixed(2)}× (${verdict}); per Hermod CPU-second ${ratios.fanoutPerCpu.toFixed(2)}×. ` +
      `Publish throughput with 2 processes: ${ratios.publish.toFixed(2)}× of one (per Hermod CPU-second ${ratios.publishPerCpu.toFixed(2)}×).`,
    '',
  );
  return { md: lines.join('\n') };
}
