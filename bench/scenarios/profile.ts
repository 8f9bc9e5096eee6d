// profile: Hermod run as its own process under `node --cpu-prof`, once per workload —
//  - fan-out: a node with many subscribers, few publishes (the notification path);
//  - publish: a node with few subscribers, many publishes as fast as the window allows (the
//    request path: parse, authorise, store, reply, notify).
// Only the samples taken while the workload ran are summarised (start-up is cut off).

import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { profileTables, summariseProfile, type ProfileSummary } from '../lib/cpuprofile.ts';
import { runFanout, type FanoutResult, type Peer, type Pool } from '../lib/loadgen.ts';
import { startBenchHermod, type HermodSpawn, type Proc } from '../lib/procs.ts';
import { fmtInt, fmtMs, mdTable } from '../lib/stats.ts';
import { hbarChart } from '../lib/svg.ts';

export interface ProfileWorkload {
  name: 'fanout' | 'publish';
  subscribers: number;
  publishes: number;
  window: number;
}

export interface ProfileResult {
  workload: ProfileWorkload;
  run: FanoutResult;
  summary: ProfileSummary;
}

export async function runProfiles(
  pool: Pool,
  peer: Peer,
  spawn: Omit<HermodSpawn, 'cpuProfDir' | 'name'>,
  workloads: ProfileWorkload[],
  setPid: (pid: number | undefined) => void,
  log: (m: string) => void,
): Promise<ProfileResult[]> {
  const out: ProfileResult[] = [];
  for (const w of workloads) {
    const profDir = path.join(spawn.dir, `cpuprof-${w.name}`);
    let proc: (Proc & { startedAt: number }) | undefined;
    try {
      proc = await startBenchHermod({ ...spawn, name: `hermod-prof-${w.name}`, cpuProfDir: profDir });
      setPid(proc.pid);
      // warm-up, not profiled in the summary window
      await runFanout(pool, peer, { subscribers: Math.min(w.subscribers, 100), publishes: 20, window: w.window, quietMs: 3000, capMs: 30_000 });
      // Only the publishing part is profiled (not node creation and subscriptions).
      let from = 0;
      const started = proc.startedAt;
      const run = await runFanout(pool, peer, {
        subscribers: w.subscribers,
        publishes: w.publishes,
        window: w.window,
        quietMs: 5000,
        capMs: 120_000,
        onPublishStart: () => (from = performance.now() - started),
      });
      const to = performance.now() - started;
      log(`profile ${w.name}: ${fmtInt(run.deliveriesPerSec)} notifications/s, ${run.publishes} publishes in ${fmtInt(run.publishPhaseMs)} ms`);
      await proc.stop();
      setPid(undefined);
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread (tsx's
      // module loader hooks run in a thread of their own and get a profile too).
      const files = (await readdir(profDir)).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f));
      if (files.length === 0) throw new Error(`no main-thread .cpuprofile written in ${profDir}`);
      const summary = await summariseProfile(path.join(profDir, files.sort().at(-1) as string), 25, [from, to]);
      out.push({ workload: w, run, summary });
    } finally {
      await proc?.stop();
      setPid(undefined);
    }
  }
  return out;
}

export function profileReport(results: ProfileResult[]): { md: string; svgs: Array<{ name: string; svg: string }> } {
  const lines: string[] = [];
  const svgs: Array<{ name: string; svg: string }> = [];
  lines.push('## Where Hermod\'s time goes (`node --cpu-prof`)');
  lines.push('');
  for (const r of results) {
    const { summary: s, run, workload: w } = r;
    const rate = w.name === 'fanout' ? `${fmtInt(run.deliveriesPerSec)} notifications/s` : `${fmtInt(run.publishes / (run.publishPhaseMs / 1000))} publishes/s`;
    lines.push(`### ${w.name === 'fanout' ? 'Fan-out' : 'Publish'}: ${w.subscribers} subscribers, ${w.publishes} publishes, window ${w.window} (${rate})`);
    lines.push('');
    const cpu = run.cpuPct;
    const pct = (k: string): string => `${Math.round(cpu[k] ?? NaN)} %`;
    lines.push(
      `Profiled window ${fmtInt(s.durationMs)} ms (publishing only), Hermod's main thread busy ${fmtInt(s.busyMs)} ms (${Math.round(100 - s.idlePct)} % of it), ` +
        `${fmtInt(s.samples)} samples. Percentages are of busy time. CPU over the run (% of one core, from /proc): ` +
        `Hermod ${pct('peer')}, Prosody ${pct('prosody')}, ejabberd ${pct('ejabberd')}, load generator ${pct('loadgen')}, other processes ${pct('other')}; ` +
        `publish IQ round trip p50 ${fmtMs(run.iqRttMs.p50)} ms.`,
    );
    lines.push('');
    lines.push(...profileTables(s, { areas: 12, topSelf: 15, inclusive: 12 }));
    svgs.push({
      name: w.name,
      svg: hbarChart({
        title: `Hermod CPU profile — ${w.name === 'fanout' ? 'fan-out' : 'publish'} (${rate})`,
        subtitle: `self time of the top functions, % of busy time (${fmtInt(s.busyMs)} ms busy)`,
        unit: '%',
        rows: s.topSelf.slice(0, 18).map((f) => ({
          label: `${f.fn} · ${f.where}`,
          value: Math.round(f.pct * 10) / 10,
          color: f.where.startsWith('src/') ? 1 : f.where.startsWith('node:') || f.where.startsWith('(') ? 7 : 0,
        })),
      }),
    });
  }
  return { md: lines.join('\n') + '\n', svgs };
}
