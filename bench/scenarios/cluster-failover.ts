// Failover time of a Hermod cluster (issue 16): three Hermods serve one component JID on ejabberd
// and share one pouchdb-server store; the work-lease holder is killed with SIGKILL, `rounds`
// times (the killed one is started again between rounds as a new member). Measured from the kill,
// on the survivors' logs: until a survivor holds the lease, and until the dead member
// is gone from the heartbeats (its journal adopted). Both are bounded by cluster.leaseSeconds plus
// a quarter of it (the renewal period) plus the status polling (100 ms). No assertions.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { clusterStatusOf, startHermodProcess, startXmppEnv, type HermodProcess } from '../../src/devenv/index.ts';
import { startBenchCouch } from '../lib/couch-docs.ts';

export interface FailoverParams {
  rounds: number;
  leaseSeconds: number;
}

export interface FailoverResult {
  params: FailoverParams;
  /** Per round: ms from the kill until a survivor held the lease, and until the dead member was removed. */
  rounds: Array<{ leaseMs: number; adoptedMs: number }>;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the scenario (servers started and stopped here). */
export async function runFailover(params: FailoverParams, log: (m: string) => void): Promise<FailoverResult> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-failover-'));
  const env = await startXmppEnv({ prosody: false });
  const couch = await startBenchCouch();
  const hermods = new Map<string, HermodProcess>();
  const rounds: FailoverResult['rounds'] = [];
  try {
    const server = env.beta;
    if (!server) throw new Error('no ejabberd');
    const store = { backend: 'couchdb', couchdb: { url: couch.url, db: 'hermod' } };
    const start = async (name: string): Promise<void> => {
      hermods.set(name, await startHermodProcess({ server, dir, name, logLevel: 'info', extra: { store, cluster: { leaseSeconds: params.leaseSeconds } } }));
    };
    for (const name of ['h1', 'h2', 'h3']) await start(name);
    for (let round = 0; round < params.rounds; round++) {
      let leader: [string, HermodProcess] | undefined;
      while (!leader) {
        for (const entry of hermods) if ((await clusterStatusOf(entry[1]))?.leases[0]?.heldHere) leader = entry;
        if (!leader) await sleep(100);
      }
      const [name, proc] = leader;
      const dead = (await clusterStatusOf(proc))?.member as string;
      const survivors = [...hermods.values()].filter((h) => h !== proc);
      // Timed from the survivors' own log lines (wall clock, ms): polling `hermod status` would add its start-up.
      const killedAt = Date.now();
      await proc.kill();
      const after = async (msg: string, member?: string): Promise<number | undefined> => {
        const lines = (await Promise.all(survivors.map((h) => h.log()))).flat();
        const hit = lines.find((l) => l.msg === msg && (l.time as number) >= killedAt && (member === undefined || l.member === member));
        return hit && (hit.time as number) - killedAt;
      };
      let leaseMs: number | undefined;
      let adoptedMs: number | undefined;
      while (leaseMs === undefined || adoptedMs === undefined) {
        await sleep(100);
        leaseMs ??= await after('cluster: this member holds the work lease');
        adoptedMs ??= await after('cluster: a member stopped beating: its heartbeat removed, its journal adopted', dead);
      }
      rounds.push({ leaseMs, adoptedMs });
      log(`cluster-failover round ${round + 1}: lease held by a survivor after ${leaseMs} ms, dead member removed (journal adopted) after ${adoptedMs} ms`);
      await start(name);
    }
  } finally {
    for (const h of hermods.values()) await h.stop().catch(() => h.kill());
    await env.stop();
    await couch.destroy();
    await rm(dir, { recursive: true, force: true });
  }
  return { params, rounds };
}

/** The Markdown section of the results. */
export function failoverReport(r: FailoverResult): { md: string } {
  const sorted = (k: 'leaseMs' | 'adoptedMs'): number[] => r.rounds.map((x) => x[k]).sort((a, b) => a - b);
  const median = (xs: number[]): number => xs[Math.floor(xs.length / 2)] ?? NaN;
  const lines = [
    '## Cluster failover after kill -9',
    '',
    `Three Hermods on ejabberd sharing one pouchdb-server store, cluster.leaseSeconds ${r.params.leaseSeconds}; the lease holder killed ${r.rounds.length} times. Target: failover ≤ 5 s.`,
    '',
    '| round | lease held by a survivor (ms) | dead member removed, journal adopted (ms) |',
    '|---|---|---|',
    ...r.rounds.map((x, i) => `| ${i + 1} | ${x.leaseMs} | ${x.adoptedMs} |`),
    `| median | ${median(sorted('leaseMs'))} | ${median(sorted('adoptedMs'))} |`,
    '',
  ];
  return { md: lines.join('\n') };
}
