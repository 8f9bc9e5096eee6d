// `npm run bench [-- --quick] [-- --only fanout,latency,...]`: Hermod side by side with
// Prosody's and ejabberd's own pub/sub and with a bare component (the ceiling), on real servers
// federating over s2s on loopback, with one load generator. See docs/PERFORMANCE.md.
//
// Scenarios: loadgen (the load generator's own ceiling), fanout, latency, ceiling (reported
// from the ceiling component's fan-out and latency runs), scale (Hermod alone, big store),
// profile (Hermod under --cpu-prof), transform (the shipped XSLT stylesheets: compile and run).
//
// Writes bench/results/<date>-<scenario>.json|.md|.svg and <date>-summary.md
// (--quick: bench/results/quick/, ignored by git). No timing assertions anywhere.
// Needs root (the devenv starts the servers in a private mount namespace). Scenarios that start
// servers first run the preflight (src/devenv/preflight.js): missing system packages are
// installed with apt-get unless --no-install or HERMOD_NO_INSTALL=1, else it exits 2 naming them.

import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureSystemPackages } from '../src/devenv/preflight.js';
import { startXmppEnv, type ServerInfo, type XmppEnv } from '../src/devenv/index.ts';
import { Pool, runFanout, runLatency, type FanoutResult, type LatencyResult, type Peer } from './lib/loadgen.ts';
import { hermodSpawnFor, killAllNow, REPO, startBenchHermod, startScript, waitForQuiet, type HermodSpawn, type Proc } from './lib/procs.ts';
import { describeMachine, machineLine, Reporter, today, type Machine } from './lib/report.ts';
import { runLoadgen, type LoadgenResult } from './scenarios/loadgen.ts';
import { profileReport, runProfiles, type ProfileResult, type ProfileWorkload } from './scenarios/profile.ts';
import { ceilingReport, fanoutReport, latencyReport, type SubscriptionCheck } from './scenarios/pubsub.ts';
import { runScale, scaleReport, type ScaleParams, type ScaleResult } from './scenarios/scale.ts';
import { replicationReport, runReplication, type ReplicationParams, type ReplicationResult } from './scenarios/replication.ts';
import { runTransform, transformReport, type TransformParams } from './scenarios/transform.ts';
import { failoverReport, runFailover, type FailoverParams } from './scenarios/cluster-failover.ts';
import { coherenceReport, runCoherence, type CoherenceParams } from './scenarios/cluster-coherence.ts';
import { midgardReport, runMidgard, type MidgardParams, type MidgardResult } from './scenarios/midgard.ts';
import { runThroughput, throughputReport, type ThroughputParams } from './scenarios/cluster-throughput.ts';

const USAGE = `npm run bench [-- OPTIONS]

  --quick            one-minute smoke run (small sizes, one run each, no profile)
  --only LIST        comma-separated subset of:
                     loadgen,fanout,latency,scale,profile,transform,replication,cluster,
                     cluster-failover,cluster-throughput,midgard (cluster: several Hermods on
                     one CouchDB store, the "coherence" section (needs only pouchdb-server), the
                     throughput with 1, 2 and 3 processes and the failover; cluster-failover,
                     cluster-throughput: that section alone; midgard: objects from D-Bus, and
                     from the spool, at Hermod A to the inbound spool at Hermod B)
                     (ceiling is reported from the fanout and latency runs)
  --servers LIST     fanout and latency only with Hermod, native pub/sub and the ceiling attached
                     to these servers: prosody, ejabberd (default both; the subscribers are on both
                     servers either way)
  --replication-profile
                     run the replication scenario's two Hermods under node --cpu-prof
                     (one partner: both; fan-out: the source and partner 1; its figures
                     then include the profiler's overhead). HERMOD_FROM_SOURCE=1 attributes
                     the time to src/ files. A quick look at a partner under the N = 4
                     fan-out, with partner 1's requests per document (about 2 minutes):
                     --only replication --no-wait --replication-docs 0 --first-sync-docs 0
                     --partners 4 --fanout-docs 2000 --replication-profile
  --replication-docs N
                     replication, one partner: documents per phase (default 5000, quick 500;
                     0 skips the one-partner phases)
  --replication-edits N
                     replication, one partner: single edits timed for the edit latency, each
                     system (default 50, quick 20). For the edit latency alone, run with
                     --replication-docs 1 --partners 0 --first-sync-docs 0 (about a minute)
  --partners LIST    replication fan-out: partner counts, one round each for Hermod and for
                     _replicate (default 1,2,4; "" or 0 skips the fan-out)
  --fanout-docs N    replication fan-out: documents written at the source per round
                     (default 5000, quick 500)
  --fanout-repeats N replication fan-out: rounds per system and partner count, in alternating
                     order (_replicate, Hermod, Hermod, _replicate, ...); the report gives means
                     (default 2, quick 1)
  --fanout-warmup-docs N
                     replication fan-out: documents delivered to every partner before each
                     round's timed phase, so that it measures warm processes (default 2000,
                     quick 100; 0: only the two notes that confirm the subscriptions)
  --first-sync-docs N
                     replication: documents of the first sync to one partner, with the Hermods'
                     peak RSS (default 100000, quick 2000; 0 skips it)
  --midgard-objects N
                     midgard: objects per phase (default 5000, quick 500)
  --cluster-processes LIST
                     cluster-throughput: process counts, one cluster each (default 1,2,3;
                     e.g. 1,2 for the 2-process ratio alone)
  --cluster-profile DIR
                     cluster-throughput: write each Hermod's V8 CPU profile into DIR at its exit
                     (the figures then include the profiler's overhead)
  --scale-fill direct
                     scale: write the items straight into the store (same layout, ~3 min
                     instead of ~12 at 1 000 000 items; nodes still through the service)
  --out DIR          results folder (default bench/results, or bench/results/quick with --quick)
  --attempts N       measure each fan-out/latency run at most N times when other processes
                     disturb it (default 3; 1 keeps every run, its "other" CPU recorded)
  --no-wait          do not wait for other processes to leave the machine idle before starting
                     (a full run waits up to 10 minutes; the wait is bounded and logged)
  --no-install       do not install missing system packages (deploy/system-packages.txt):
                     exit 2 naming them (also HERMOD_NO_INSTALL=1)
  --render-only      run nothing: rebuild the Markdown, SVG and summary of a date's results
                     from their JSON files (with --date YYYY-MM-DD, default today)
  -h, --help         this text
`;

const ALL = ['loadgen', 'fanout', 'latency', 'scale', 'profile', 'transform', 'replication', 'cluster', 'cluster-failover', 'cluster-throughput', 'midgard'] as const;
type Scenario = (typeof ALL)[number];

interface Config {
  perServer: number;
  resourcesPerAccount: number;
  fanout: Array<{ subscribers: number; publishes: number; reps: number }>;
  window: number;
  /** A run ends when nothing arrived for this long (lost notifications). */
  quietMs: number;
  /** A run during which other processes used more than this (% of one core) is redone... */
  maxOtherPct: number;
  /** ...up to this many attempts in all (the least disturbed attempt is kept)... */
  attempts: number;
  /** ...while the total time spent waiting for a quiet machine stays under this. */
  waitBudgetMs: number;
  /** Each rate runs for its own duration (at high rates a slow service builds a backlog that takes long to drain). */
  latency: { rates: Array<{ rate: number; durationS: number }>; subscribers: number; warmup: number };
  scale: ScaleParams;
  loadgen: { parseMessages: number; socketConnections: number; socketPerConnection: number };
  profile: ProfileWorkload[];
  coherence: CoherenceParams;
  transform: TransformParams;
  replication: ReplicationParams;
  'cluster-failover': FailoverParams;
  midgard: MidgardParams;
  'cluster-throughput': ThroughputParams;
}

const FULL: Config = {
  perServer: 500,
  resourcesPerAccount: 50,
  fanout: [
    { subscribers: 100, publishes: 100, reps: 3 },
    { subscribers: 1000, publishes: 20, reps: 2 },
  ],
  window: 8,
  quietMs: 8000,
  maxOtherPct: 25,
  attempts: 3,
  waitBudgetMs: 12 * 60_000,
  latency: {
    rates: [
      { rate: 50, durationS: 10 },
      { rate: 500, durationS: 4 },
    ],
    subscribers: 10,
    warmup: 0.1,
  },
  scale: {
    nodes: 100_000,
    items: 1_000_000,
    bigNodeItems: 100_000,
    maxItems: [1, 10, 100, 1000],
    pageSize: 10,
    walkPages: 50,
    reps: 30,
    smallNodeReads: 500,
    publishes: 200,
    restarts: 2,
    fillTimeoutMs: 15 * 60_000,
  },
  loadgen: { parseMessages: 200_000, socketConnections: 100, socketPerConnection: 2000 },
  profile: [
    { name: 'fanout', subscribers: 1000, publishes: 20, window: 8 },
    { name: 'publish', subscribers: 10, publishes: 3000, window: 32 },
  ],
  coherence: { changes: 200, publishes: 300 },
  transform: { compiles: 5, transforms: 2000, warmup: 200 },
  replication: { docs: 5000, chunk: 500, edits: 50, warmupEdits: 5, phaseTimeoutMs: 120_000, fanout: { partners: [1, 2, 4], docs: 5000, repeats: 2, warmupDocs: 2000 }, firstSyncDocs: 100_000 },
  'cluster-failover': { rounds: 5, leaseSeconds: 4 },
  midgard: { objects: 5000, edits: 50, warmupEdits: 5, phaseTimeoutMs: 300_000 },
  'cluster-throughput': { processes: [1, 2, 3], subscribers: 500, fanoutPublishes: 60, window: 8, reps: 2, publishers: 4, nodes: 8, publishes: 600, publisherWindow: 4, leaseSeconds: 4 },
};

const QUICK: Config = {
  perServer: 50,
  resourcesPerAccount: 25,
  fanout: [{ subscribers: 100, publishes: 50, reps: 1 }],
  window: 8,
  quietMs: 2000,
  maxOtherPct: 25,
  attempts: 1,
  waitBudgetMs: 0,
  latency: {
    rates: [
      { rate: 50, durationS: 1 },
      { rate: 500, durationS: 1 },
    ],
    subscribers: 10,
    warmup: 0.1,
  },
  scale: {
    nodes: 1000,
    items: 10_000,
    bigNodeItems: 2000,
    maxItems: [1, 10, 100],
    pageSize: 10,
    walkPages: 10,
    reps: 10,
    smallNodeReads: 50,
    publishes: 20,
    restarts: 1,
    fillTimeoutMs: 60_000,
  },
  loadgen: { parseMessages: 50_000, socketConnections: 50, socketPerConnection: 500 },
  profile: [],
  coherence: { changes: 20, publishes: 50 },
  transform: { compiles: 1, transforms: 200, warmup: 20 },
  replication: { docs: 500, chunk: 250, edits: 20, warmupEdits: 2, phaseTimeoutMs: 60_000, fanout: { partners: [1, 2, 4], docs: 500, warmupDocs: 100 }, firstSyncDocs: 2000 },
  'cluster-failover': { rounds: 2, leaseSeconds: 4 },
  midgard: { objects: 500, edits: 20, warmupEdits: 2, phaseTimeoutMs: 60_000 },
  'cluster-throughput': { processes: [1, 2, 3], subscribers: 100, fanoutPublishes: 50, window: 8, reps: 1, publishers: 4, nodes: 4, publishes: 200, publisherWindow: 4, leaseSeconds: 4 },
};

/** A bad command-line value (exit 2). */
class UsageError extends Error {}

const T0 = performance.now();
const log = (m: string): void => void process.stderr.write(`[bench +${((performance.now() - T0) / 1000).toFixed(1)}s] ${m}\n`);

function gitCommit(): string {
  // A snapshot without .git (e.g. `git archive HEAD`, to measure a fixed commit while the working
  // tree changes) can name its commit here.
  if (process.env.HERMOD_BENCH_COMMIT) return process.env.HERMOD_BENCH_COMMIT;
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8', timeout: 5000 }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin'], { cwd: REPO, encoding: 'utf8', timeout: 5000 }).trim();
    return dirty ? `${head} (src/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      only: { type: 'string' },
      servers: { type: 'string' },
      attempts: { type: 'string' },
      out: { type: 'string' },
      'no-wait': { type: 'boolean' },
      'render-only': { type: 'boolean' },
      'replication-profile': { type: 'boolean' },
      'replication-docs': { type: 'string' },
      'replication-edits': { type: 'string' },
      partners: { type: 'string' },
      'fanout-docs': { type: 'string' },
      'fanout-repeats': { type: 'string' },
      'fanout-warmup-docs': { type: 'string' },
      'first-sync-docs': { type: 'string' },
      'midgard-objects': { type: 'string' },
      'no-install': { type: 'boolean' },
      'scale-fill': { type: 'string' },
      'cluster-processes': { type: 'string' },
      'cluster-profile': { type: 'string' },
      date: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const quick = values.quick ?? false;
  if (values['render-only']) {
    return renderOnly(path.resolve(values.out ?? path.join(REPO, 'bench', 'results', ...(quick ? ['quick'] : []))), values.date ?? today());
  }
  const cfg = { ...(quick ? QUICK : FULL) };
  if (values.attempts !== undefined) {
    const n = Number(values.attempts);
    if (!Number.isInteger(n) || n < 1) {
      process.stderr.write(`bench: --attempts wants a whole number ≥ 1, not '${values.attempts}'\n`);
      return 2;
    }
    cfg.attempts = n;
  }
  const count = (opt: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${opt} wants a whole number ≥ ${min}, not '${v}'`);
    return n;
  };
  try {
    const r = { ...cfg.replication, fanout: { ...(cfg.replication.fanout ?? { partners: [], docs: 0 }) } };
    r.docs = count('replication-docs', values['replication-docs'], 0) ?? r.docs;
    r.edits = count('replication-edits', values['replication-edits'], 1) ?? r.edits;
    r.firstSyncDocs = count('first-sync-docs', values['first-sync-docs'], 0) ?? r.firstSyncDocs;
    r.fanout.docs = count('fanout-docs', values['fanout-docs'], 1) ?? r.fanout.docs;
    r.fanout.repeats = count('fanout-repeats', values['fanout-repeats'], 1) ?? r.fanout.repeats;
    r.fanout.warmupDocs = count('fanout-warmup-docs', values['fanout-warmup-docs'], 0) ?? r.fanout.warmupDocs;
    if (values.partners !== undefined) {
      r.fanout.partners = values.partners.split(',').filter((x) => x.trim() !== '').map((x) => count('partners', x.trim(), 0) as number).filter((n) => n > 0);
    }
    cfg.replication = r;
    cfg.midgard = { ...cfg.midgard, objects: count('midgard-objects', values['midgard-objects'], 1) ?? cfg.midgard.objects };
    const ct = { ...cfg['cluster-throughput'] };
    if (values['cluster-processes'] !== undefined) ct.processes = values['cluster-processes'].split(',').map((x) => count('cluster-processes', x.trim(), 1) as number);
    if (values['cluster-profile'] !== undefined) ct.cpuProfDir = path.resolve(values['cluster-profile']);
    cfg['cluster-throughput'] = ct;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    return 2;
  }
  if (values['scale-fill'] !== undefined) {
    if (values['scale-fill'] !== 'direct' && values['scale-fill'] !== 'service') {
      process.stderr.write(`bench: --scale-fill wants direct or service, not '${values['scale-fill']}'\n`);
      return 2;
    }
    cfg.scale = { ...cfg.scale, fill: values['scale-fill'] };
  }
  const only = values.only ? values.only.split(',').map((s) => s.trim()) : undefined;
  for (const s of only ?? []) {
    if (!(ALL as readonly string[]).includes(s)) {
      process.stderr.write(`bench: unknown scenario '${s}' (choose from ${ALL.join(', ')})\n`);
      return 2;
    }
  }
  const servers = values.servers ? values.servers.split(',').map((s) => s.trim()) : ['prosody', 'ejabberd'];
  for (const s of servers) {
    if (s !== 'prosody' && s !== 'ejabberd') {
      process.stderr.write(`bench: unknown server '${s}' (choose from prosody, ejabberd)\n`);
      return 2;
    }
  }
  const onProsody = servers.includes('prosody');
  const onEjabberd = servers.includes('ejabberd');
  const want = (s: Scenario): boolean => (only ? only.includes(s) : quick ? s !== 'profile' : true);
  // `cluster` is the coherence section and the failover; `cluster-failover` the failover alone.
  const wantFailover = want('cluster-failover') || (only?.includes('cluster') ?? false);
  const wantThroughput = want('cluster-throughput') || (only?.includes('cluster') ?? false);
  const needServers = want('fanout') || want('latency') || want('scale') || want('profile');
  if (needServers || want('replication') || wantFailover || wantThroughput || want('midgard')) {
    const ready = ensureSystemPackages({ what: 'npm run bench', noInstall: values['no-install'] ?? false, needsRoot: true });
    if (ready !== 0) return ready;
  }
  if (quick && want('profile')) cfg.profile = FULL.profile.map((w) => ({ ...w, subscribers: Math.min(w.subscribers, 100), publishes: Math.min(w.publishes, 200) }));
  const outDir = path.resolve(values.out ?? path.join(REPO, 'bench', 'results', ...(quick ? ['quick'] : [])));
  await mkdir(outDir, { recursive: true });
  if (quick && !values.out) await writeFile(path.join(outDir, '.gitignore'), '*\n');

  const machine = describeMachine();
  const commit = gitCommit();
  // Other processes on the machine distort every figure: wait (bounded) for a quiet moment and
  // record how busy the machine was; each run also records "other" CPU.
  let foreignCores = NaN;
  if (!quick && !values['no-wait']) {
    log('waiting for the machine to be quiet (other processes < 0.3 cores for 3 × 2 s; at most 10 min)');
    foreignCores = await waitForQuiet(() => [process.pid], { maxCores: 0.3, windowMs: 2000, windows: 3, timeoutMs: 10 * 60_000, log });
    log(`other processes at start: ${foreignCores.toFixed(2)} cores`);
  }
  const reporter = new Reporter(outDir, today(), { mode: quick ? 'quick' : 'full', commit, machine, foreignCoresAtStart: foreignCores, config: cfg });
  log(`${quick ? 'quick' : 'full'} run, results in ${path.relative(REPO, outDir) || '.'}; ${machineLine(machine)}`);
  const failures: string[] = [];

  let loadgen: LoadgenResult | undefined;
  if (want('loadgen') || want('fanout')) {
    log('loadgen: measuring the load generator\'s own receive ceiling');
    loadgen = await runLoadgen(cfg.loadgen);
    log(`loadgen: parse ${Math.round(loadgen.parse.perSec)}/s, loopback socket ${Math.round(loadgen.socket.perSec)}/s`);
    await reporter.write('loadgen', { json: loadgen });
  }

  if (want('transform')) {
    const r = await runTransform(cfg.transform, log);
    await reporter.write('transform', { json: r, md: transformReport(r).md });
  }

  if (want('cluster')) {
    const r = await runCoherence(cfg.coherence, log);
    await reporter.write('cluster-coherence', { json: r, md: coherenceReport(r).md });
  }

  if (needServers) {
    const dir = await mkdtemp(path.join(tmpdir(), 'hermod-bench-'));
    let env: XmppEnv | undefined;
    let pool: Pool | undefined;
    const procs = new Map<string, Proc>();
    // Interrupted: the devenv's own handler kills the servers; children die with us (their PIDs
    // are SIGKILLed on exit by lib/procs.ts); remove our temp dir.
    const onSignal = (sig: NodeJS.Signals): void => {
      log(`${sig}: stopping`);
      killAllNow();
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        /* ignore */
      }
      process.exit(sig === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const stopProc = async (name: string): Promise<void> => {
      const p = procs.get(name);
      procs.delete(name);
      // A child that does not stop on SIGTERM is SIGKILLed and said so; the run goes on.
      if (p) await p.stop().catch((err: unknown) => log(String(err)));
    };
    try {
      env = await startXmppEnv({
        nativePubsub: true,
        nativePubsubAdmins: ['pub@alpha.test'],
        extraComponents: ['ceiling', 'scale'],
        log: (m) => log(`devenv: ${m}`),
      });
      const alpha = env.alpha as ServerInfo;
      const beta = env.beta as ServerInfo;
      const needPool = want('fanout') || want('latency') || want('profile');
      const maxS = Math.max(...cfg.fanout.map((f) => f.subscribers), cfg.latency.subscribers, ...cfg.profile.map((w) => w.subscribers));
      pool = await Pool.create(
        env,
        { perServer: needPool ? Math.ceil(maxS / 2) : 0, resourcesPerAccount: cfg.resourcesPerAccount, log },
        'pub@alpha.test',
      );

      const hermodSpawn = (server: ServerInfo, name: string): HermodSpawn => hermodSpawnFor(server, name, dir);
      /** Until a ping to the component is answered by it (the server may route it a moment after the handshake). */
      const waitServing = async (server: ServerInfo, jid: string): Promise<void> => {
        const client = (pool as Pool).publishers[server.kind];
        const deadline = Date.now() + 15_000;
        for (;;) {
          try {
            await client.iq('get', jid, `<ping xmlns='urn:xmpp:ping'/>`, 3000);
            return;
          } catch (err) {
            if (Date.now() > deadline) throw new Error(`${jid} does not answer pings: ${String(err)}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      };
      const startHermod = async (server: ServerInfo, name: string): Promise<void> => {
        procs.set(name, await startBenchHermod(hermodSpawn(server, name)));
        await waitServing(server, server.componentJid);
        log(`${name} serving (pid ${procs.get(name)?.pid})`);
      };
      const startCeiling = async (server: ServerInfo, name: string): Promise<void> => {
        const c = server.extraComponents.find((x) => x.jid.startsWith('ceiling.')) as { jid: string; secret: string };
        procs.set(name, await startScript(name, 'ceiling-component.ts', [server.componentService, c.jid, c.secret], dir));
        await waitServing(server, c.jid);
        log(`${name} serving (pid ${procs.get(name)?.pid})`);
      };
      const pidOf = (name: string) => (): number | undefined => procs.get(name)?.pid;
      const peer = (service: Peer['service'], server: ServerInfo, proc?: string): Peer => ({
        id: `${service}@${server.kind}`,
        service,
        server: server.kind,
        jid: service === 'hermod' ? server.componentJid : service === 'native' ? `native.${server.domain}` : `ceiling.${server.domain}`,
        ...(proc ? { pid: pidOf(proc) } : {}),
      });

      const ourPids = (): number[] =>
        [process.pid, env?.alpha?.pid(), env?.beta?.pid(), ...[...procs.values()].map((p) => p.pid)].filter((x): x is number => x !== undefined);
      let waited = 0;
      /** Runs a measurement; redoes it (bounded) if other processes disturbed it. */
      const guarded = async <T extends { cpuPct: Record<string, number> }>(what: string, run: () => Promise<T>): Promise<T & { attempts: number }> => {
        let best: (T & { attempts: number }) | undefined;
        for (let attempt = 1; attempt <= cfg.attempts; attempt++) {
          const r = { ...(await run()), attempts: attempt };
          const other = r.cpuPct.other ?? 0;
          if (!best || other < (best.cpuPct.other ?? 0)) best = r;
          if (other <= cfg.maxOtherPct || attempt === cfg.attempts) break;
          if (waited >= cfg.waitBudgetMs) {
            log(`${what}: other processes used ${Math.round(other)} % of a core meanwhile; keeping it (waiting budget used up)`);
            break;
          }
          log(`${what}: other processes used ${Math.round(other)} % of a core meanwhile; waiting for quiet and redoing it`);
          const t = Date.now();
          await waitForQuiet(ourPids, { maxCores: cfg.maxOtherPct / 100, windowMs: 1000, windows: 2, timeoutMs: Math.min(120_000, cfg.waitBudgetMs - waited), log });
          waited += Date.now() - t;
        }
        return best as T & { attempts: number };
      };

      const fanoutRuns: FanoutResult[] = [];
      const latencyRuns: LatencyResult[] = [];
      const warmed = new Set<string>();
      /** Warm-up (JIT, s2s connections for the service's domain), once per peer process; not recorded. */
      const warm = async (peers: Peer[]): Promise<void> => {
        for (const p of peers) {
          const key = `${p.id}:${p.pid?.() ?? 'native'}`;
          if (warmed.has(key)) continue;
          warmed.add(key);
          await runFanout(pool as Pool, p, { subscribers: Math.min(100, maxS), publishes: quick ? 10 : 20, window: cfg.window, quietMs: 2000, capMs: 30_000 }).catch((err: unknown) =>
            log(`warm-up ${p.id} failed: ${String(err)}`),
          );
        }
      };
      const subscriptionChecks: Array<{ peer: string; subscribers: number; silent: number; lost: number; expected: number }> = [];
      const fanoutPhase = async (peers: Peer[]): Promise<void> => {
        await warm(peers);
        // Correctness check, not a measurement: 20 subscriptions sent at once to a fresh node.
        for (const p of peers) {
          const r = await runFanout(pool as Pool, p, { subscribeMode: 'parallel', subscribers: 20, publishes: 3, window: 1, quietMs: 2000, capMs: 20_000 }).catch(() => undefined);
          if (r) subscriptionChecks.push({ peer: p.id, subscribers: 20, silent: r.silentReceivers, lost: r.lost, expected: r.expected });
          if (r?.silentReceivers) log(`subscription check ${p.id}: ${r.silentReceivers} of 20 concurrent subscriptions not in effect`);
        }
        for (const f of cfg.fanout) {
          for (let rep = 0; rep < f.reps; rep++) {
            const order = peers.map((_, i) => peers[(i + rep) % peers.length] as Peer);
            for (const p of order) {
              try {
                const r = await guarded(`fanout S=${f.subscribers} ${p.id}`, () =>
                  runFanout(pool as Pool, p, { subscribers: f.subscribers, publishes: f.publishes, window: cfg.window, quietMs: cfg.quietMs, capMs: 180_000 }),
                );
                fanoutRuns.push(r);
                log(
                  `fanout S=${f.subscribers} #${rep + 1} ${p.id}: ${Math.round(r.deliveriesPerSec)}/s, ${r.delivered}/${r.expected} in ${Math.round(r.durationMs)} ms, ` +
                    `p99 ${Math.round(r.latencyMs.p99)} ms, cpu ${JSON.stringify(Object.fromEntries(Object.entries(r.cpuPct).map(([k, v]) => [k, Math.round(v)])))}` +
                    (r.iqErrors ? `, ${r.iqErrors} IQ errors: ${r.firstIqError}` : ''),
                );
              } catch (err) {
                failures.push(`fanout S=${f.subscribers} ${p.id}: ${String(err)}`);
                log(`fanout ${p.id} FAILED: ${String(err)}`);
              }
            }
          }
        }
      };
      const latencyPhase = async (peers: Peer[]): Promise<void> => {
        await warm(peers);
        for (const { rate, durationS } of cfg.latency.rates) {
          for (const p of peers) {
            try {
              const r = await guarded(`latency ${rate}/s ${p.id}`, () =>
                runLatency(pool as Pool, p, { subscribers: cfg.latency.subscribers, warmup: cfg.latency.warmup, rate, durationS, quietMs: cfg.quietMs, capMs: durationS * 1000 + 90_000 }),
              );
              latencyRuns.push(r);
              log(
                `latency ${rate}/s ${p.id}: achieved ${Math.round(r.achievedRate)}/s, p50 ${r.latencyMs.p50.toFixed(1)} p99 ${r.latencyMs.p99.toFixed(1)} ms, ` +
                  `IQ p99 ${r.iqRttMs.p99.toFixed(1)} ms, lost ${r.lost}, cpu ${JSON.stringify(Object.fromEntries(Object.entries(r.cpuPct).map(([k, v]) => [k, Math.round(v)])))}`,
              );
            } catch (err) {
              failures.push(`latency ${rate}/s ${p.id}: ${String(err)}`);
              log(`latency ${p.id} FAILED: ${String(err)}`);
            }
          }
        }
      };

      // ejabberd registers every host of an ejabberd_service listener for each component that
      // connects to it, so two components on beta.test would receive each other's traffic:
      // Hermod-on-ejabberd and the ceiling-on-ejabberd are never connected at the same time.
      // --servers leaves out the peers attached to the other server.
      const phase = async (n: 1 | 2): Promise<Peer[]> => {
        const peers: Peer[] = [];
        if (onProsody) {
          if (!procs.has('hermod-prosody')) await startHermod(alpha, 'hermod-prosody');
          if (!procs.has('ceiling-prosody')) await startCeiling(alpha, 'ceiling-prosody');
          if (n === 1) peers.push(peer('hermod', alpha, 'hermod-prosody'), peer('native', alpha), peer('ceiling', alpha, 'ceiling-prosody'));
        }
        if (!onEjabberd) return peers;
        if (n === 1) {
          await stopProc('ceiling-ejabberd');
          if (!procs.has('hermod-ejabberd')) await startHermod(beta, 'hermod-ejabberd');
          return [...peers, peer('hermod', beta, 'hermod-ejabberd'), peer('native', beta)];
        }
        await stopProc('hermod-ejabberd');
        if (!procs.has('ceiling-ejabberd')) await startCeiling(beta, 'ceiling-ejabberd');
        return [...peers, peer('ceiling', beta, 'ceiling-ejabberd')];
      };
      const sizes = cfg.fanout.map((f) => f.subscribers);
      if (want('fanout')) {
        await fanoutPhase(await phase(1));
        await fanoutPhase(await phase(2));
        const rep = fanoutReport(fanoutRuns, sizes, { machineShort: `${machine.cores} cores shared by everything` }, subscriptionChecks);
        await reporter.write('fanout', {
          json: { params: { sizes: cfg.fanout, window: cfg.window }, summary: rep.summary, subscriptionChecks, runs: fanoutRuns },
          md: rep.md,
          svg: rep.svg,
        });
      }
      if (want('latency')) {
        await latencyPhase(await phase(2));
        await latencyPhase(await phase(1));
        const rep = latencyReport(latencyRuns, cfg.latency.rates.map((r) => r.rate));
        await reporter.write('latency', { json: { params: cfg.latency, summary: rep.summary, runs: latencyRuns }, md: rep.md, svg: rep.svgs });
      }
      if (want('fanout') || want('latency')) {
        // The ceiling report also takes the other scenario's runs from today's files when only
        // one of fanout/latency ran in this invocation.
        const fr = fanoutRuns.length ? fanoutRuns : ((await reporter.read('fanout')) as { runs?: FanoutResult[] } | undefined)?.runs ?? [];
        const lr = latencyRuns.length ? latencyRuns : ((await reporter.read('latency')) as { runs?: LatencyResult[] } | undefined)?.runs ?? [];
        const lg = loadgen ?? ((await reporter.read('loadgen')) as LoadgenResult | undefined);
        const ceil = ceilingReport(fr, lr, lg, [...new Set(fr.map((r) => r.subscribers))].sort((a, b) => a - b));
        await reporter.write('ceiling', {
          json: { summary: ceil.summary, fanout: fr.filter((r) => r.service === 'ceiling'), latency: lr.filter((r) => r.service === 'ceiling'), loadgen: lg },
          md: ceil.md,
          svg: ceil.svg,
        });
      }
      await stopProc('ceiling-ejabberd');
      await stopProc('ceiling-prosody');
      await stopProc('hermod-ejabberd');

      if (want('profile') && cfg.profile.length > 0) {
        await stopProc('hermod-prosody');
        log('profile: Hermod on Prosody under --cpu-prof');
        let profPid: number | undefined;
        const results = await runProfiles(
          pool,
          { id: 'hermod@prosody', service: 'hermod', server: 'prosody', jid: alpha.componentJid, pid: () => profPid },
          hermodSpawn(alpha, 'hermod-prof'),
          cfg.profile,
          (pid) => (profPid = pid),
          log,
        );
        const rep = profileReport(results);
        await reporter.write('profile', { json: results, md: rep.md, svg: rep.svgs });
      }
      await stopProc('hermod-prosody');

      if (want('scale')) {
        const scaleComponent = alpha.extraComponents.find((x) => x.jid.startsWith('scale.')) as { jid: string; secret: string };
        const r = await runScale(cfg.scale, { dir, server: alpha, component: scaleComponent, client: pool.publishers.prosody, owner: 'pub@alpha.test', log });
        log(`scale: store ${(r.storeBytes / 2 ** 20).toFixed(0)} MiB, restart ${r.restartToServingMs.map(Math.round).join('/')} ms, RSS ${r.rssMiB.afterReads.toFixed(0)} MiB`);
        const rep = scaleReport(r);
        await reporter.write('scale', { json: r, md: rep.md, svg: rep.svg });
      }
    } finally {
      for (const name of [...procs.keys()]) await stopProc(name).catch(() => {});
      await pool?.close().catch(() => {});
      await env?.stop();
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** Runs one section that starts its own servers; a failure is recorded and the run goes on. */
  const section = async (name: string, what: string, run: () => Promise<{ json: unknown; md: string }>): Promise<void> => {
    log(`${name}: ${what}`);
    try {
      await reporter.write(name, await run());
    } catch (err) {
      failures.push(`${name}: ${String(err)}`);
      log(`${name} FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  };
  if (wantThroughput) {
    await section('cluster-throughput', '1, 2 and 3 Hermods on ejabberd and one pouchdb-server store: fan-out and publish throughput', async () => {
      const r = await runThroughput(cfg['cluster-throughput'], log);
      return { json: r, md: throughputReport(r).md };
    });
  }
  if (wantFailover) {
    await section('cluster-failover', 'three Hermods on ejabberd and one pouchdb-server store, the lease holder killed', async () => {
      const r = await runFailover(cfg['cluster-failover'], log);
      return { json: r, md: failoverReport(r).md };
    });
  }

  if (want('replication')) {
    log('replication: Hermods over s2s vs _replicate between pouchdb-servers: one partner, fan-out to N partners, first sync');
    try {
      const r = await runReplication({ ...cfg.replication, cpuProf: values['replication-profile'] ?? false }, log);
      failures.push(...(r.failures ?? []).map((f) => `replication: ${f}`));
      const rep = replicationReport(r);
      await reporter.write('replication', { json: r, md: rep.md, svg: rep.svgs });
    } catch (err) {
      failures.push(`replication: ${String(err)}`);
      log(`replication FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  }

  if (want('midgard')) {
    log('midgard: objects from D-Bus (and from the spool) at Hermod A to the inbound spool at Hermod B over s2s');
    const r: MidgardResult = await runMidgard(cfg.midgard, log);
    failures.push(...r.failures.map((f) => `midgard: ${f}`));
    await reporter.write('midgard', { json: r, md: midgardReport(r).md });
  }

  const summaryFile = await writeSummary(reporter, quick, machine, commit, failures);
  log(`done in ${((performance.now() - T0) / 1000).toFixed(0)} s; ${reporter.written.length + 1} files written, summary: ${path.relative(REPO, summaryFile)}`);
  return failures.length ? 1 : 0;
}

/**
 * The summary gathers the date's scenario reports in the folder, so that scenarios run in
 * separate invocations (--only) make one summary.
 */
async function writeSummary(reporter: Reporter, quick: boolean, machine: Machine, commit: string, failures: string[] = []): Promise<string> {
  const summary: string[] = [
    `# Hermod benchmark — ${reporter.date}${quick ? ' (quick smoke run: small sizes, single runs — not for comparison)' : ''}`,
    '',
    `Machine: ${machineLine(machine)}. Commit ${commit}. Everything (both servers, Hermod, the peers, the load generator) shares these cores.`,
    '',
    'CPU columns are % of one core over the active part of each run; "other processes" is what the rest of the machine used meanwhile ' +
      '(anything above a few % means the figures of that run are disturbed).',
    '',
  ];
  for (const scenario of ['fanout', 'latency', 'ceiling', 'scale', 'profile', 'transform', 'replication', 'cluster-coherence', 'cluster-throughput', 'cluster-failover', 'midgard']) {
    const md = await readFile(reporter.file(scenario, 'md'), 'utf8').catch(() => undefined);
    if (md) summary.push(md);
  }
  summary.push('## Not measured');
  summary.push('');
  summary.push('- **libervia-pubsub**: optional third peer, skipped (needs PostgreSQL and its own setup).');
  if (failures.length) {
    summary.push('');
    summary.push('## Failed runs');
    summary.push('');
    for (const f of failures) summary.push(`- ${f}`);
  }
  await mkdir(reporter.dir, { recursive: true });
  const summaryFile = reporter.file('summary', 'md');
  await writeFile(summaryFile, summary.join('\n') + '\n');
  return summaryFile;
}

/** --render-only: rebuilds the Markdown and SVG of a date's results from their JSON files. */
async function renderOnly(outDir: string, date: string): Promise<number> {
  const reporter = new Reporter(outDir, date, {});
  const whole = async (scenario: string): Promise<Record<string, unknown> | undefined> =>
    JSON.parse(await readFile(reporter.file(scenario, 'json'), 'utf8').catch(() => 'null')) as Record<string, unknown> | undefined ?? undefined;
  const fanout = await whole('fanout');
  const latency = await whole('latency');
  const loadgen = (await whole('loadgen'))?.results as LoadgenResult | undefined;
  const fr = ((fanout?.results as { runs?: FanoutResult[] } | undefined)?.runs ?? []) as FanoutResult[];
  const lr = ((latency?.results as { runs?: LatencyResult[] } | undefined)?.runs ?? []) as LatencyResult[];
  const sizes = [...new Set(fr.map((r) => r.subscribers))].sort((a, b) => a - b);
  if (fanout) {
    const checks = (fanout.results as { subscriptionChecks?: SubscriptionCheck[] }).subscriptionChecks ?? [];
    const machine = fanout.machine as Machine | undefined;
    const rep = fanoutReport(fr, sizes, { machineShort: `${machine?.cores ?? '?'} cores shared by everything` }, checks);
    await reporter.writeViews('fanout', { md: rep.md, svg: rep.svg });
  }
  if (latency) {
    const rates = [...new Set(lr.map((r) => r.rate))].sort((a, b) => a - b);
    const rep = latencyReport(lr, rates);
    await reporter.writeViews('latency', { md: rep.md, svg: rep.svgs });
  }
  if (fanout || latency) {
    const ceil = ceilingReport(fr, lr, loadgen, sizes);
    await reporter.writeViews('ceiling', { md: ceil.md, svg: ceil.svg });
  }
  const scale = await whole('scale');
  if (scale) {
    const rep = scaleReport(scale.results as ScaleResult);
    await reporter.writeViews('scale', { md: rep.md, svg: rep.svg });
  }
  const profile = await whole('profile');
  if (profile) {
    const rep = profileReport(profile.results as ProfileResult[]);
    await reporter.writeViews('profile', { md: rep.md, svg: rep.svgs });
  }
  const replication = await whole('replication');
  if (replication) {
    const rep = replicationReport(replication.results as ReplicationResult);
    await reporter.writeViews('replication', { md: rep.md, svg: rep.svgs });
  }
  const midgard = await whole('midgard');
  if (midgard) await reporter.writeViews('midgard', { md: midgardReport(midgard.results as MidgardResult).md });
  const meta = fanout ?? latency ?? scale ?? profile ?? replication ?? midgard;
  if (!meta) {
    process.stderr.write(`bench: no results for ${date} in ${outDir}\n`);
    return 2;
  }
  const file = await writeSummary(reporter, meta.mode === 'quick', meta.machine as Machine, String(meta.commit ?? 'unknown'));
  log(`re-rendered ${reporter.written.length} files and ${path.relative(REPO, file)}`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    log(`FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  },
);
