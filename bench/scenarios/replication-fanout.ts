// replication, part two: one source site feeding N partner sites, and a big first sync.
//
// Topology (one XMPP environment, shared): the SOURCE site is a pouchdb-server plus a Hermod
// attached to ejabberd as pubsub.beta.test; partner i is its own pouchdb-server plus its own
// Hermod attached to Prosody as the extra component partner<i>.alpha.test (Prosody gives each
// component its own route; ejabberd would route every host of its component listener to whichever
// component connected, so the several partners live on Prosody). Every notification crosses s2s
// from ejabberd to Prosody. The Hermods run with the default discovery interval: a partner follows
// the source's tag nodes when the source announces them. Each partner's content database holds one contact whose JID is the
// source's service; the source's tags `bench` and `bench2` whitelist every partner's JID.
//
// Fan-out round (N partners, each system on fresh databases and fresh processes):
//  - Hermod: the N partner Hermods and the source Hermod running, every partner subscribed
//    (a warm-up note in each tag has reached every partner, then a warm-up load of W other notes,
//    FanoutParams.warmupDocs); then D notes written at the source
//    with _bulk_docs; from the first write until the LAST partner's _changes shows every note
//    with the _rev the source gave it.
//  - `_replicate`: N continuous pull replications, one run by each partner's pouchdb-server from
//    the source database, warmed up the same way; the same D notes, timed the same way.
//  Reported: documents/s delivered to every partner (D / that time), and the source site's CPU
//  per document (CPU-seconds of the source pouchdb-server, plus the source Hermod for Hermod,
//  over the phase, / D), from /proc/<pid>/stat of the processes this run started.
//
// First sync: F notes already in the source database, partner 1's Hermod running, then the
// source Hermod spawned; from its spawn until partner 1 has every note. Peak resident memory
// of both Hermods (VmHWM, and VmRSS sampled every 250 ms). Then, for comparison, a one-shot
// `_replicate` of the same database by partner 1's pouchdb-server into a fresh database.

import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { CouchServer } from '../../src/devenv/couchdb.ts';
import type { HermodProcess } from '../../src/devenv/hermod.ts';
import { tail } from '../../src/devenv/process.ts';
import type { ServerInfo, XmppEnv } from '../../src/devenv/index.ts';
import { bulkLoad, ChangesWatcher, startBenchCouch, docStream, requestLogSize, requestsSince, type Doc } from '../lib/couch-docs.ts';
import { profileTables, summariseProfile, type ProfileSummary } from '../lib/cpuprofile.ts';
import { cpuPercent, sampleCpu, type CpuSample } from '../lib/loadgen.ts';
import { hermodSpawnFor, memoryMiB, sleep, startBenchHermod } from '../lib/procs.ts';
import { fmtInt, fmtRatio, mdTable, mean } from '../lib/stats.ts';
import { barChart } from '../lib/svg.ts';

export type System = 'hermod' | 'replicate';

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';

/** Labels of the partner components (`partner<i>.alpha.test`) the environment must accept. */
export const partnerLabels = (max: number): string[] => Array.from({ length: max }, (_, i) => `partner${i + 1}`);

export interface FanoutParams {
  /** Partner counts, one round per count and system (e.g. [1, 2, 4]). */
  partners: number[];
  /** Documents written at the source per round. */
  docs: number;
  /** Documents per _bulk_docs request. */
  chunk: number;
  /** Bound of a round's measured phase. */
  phaseTimeoutMs: number;
  /** Run the source Hermod and partner 1's Hermod under `node --cpu-prof` and summarise the measured phase (Hermod rounds). */
  cpuProf?: boolean;
  /**
   * Documents written at the source and delivered to every partner before a round's timed phase
   * (default 0): every process of the round (pouchdb-servers, Hermods) has run the replication
   * path for a while, so the timed phase measures the steady state a long-running service sees,
   * not the JIT compiler's and the caches' warm-up of fresh processes.
   */
  warmupDocs?: number;
  /**
   * Rounds per system and partner count (default 1), in alternating order (`_replicate`, Hermod,
   * Hermod, `_replicate`, …) so that a drift of the machine's speed during the run falls on both
   * systems alike; the report gives their means.
   */
  repeats?: number;
}

export interface FanoutRound {
  system: System;
  partners: number;
  /** Which of the `repeats` rounds of this system and partner count (0-based). */
  repeat?: number;
  docs: number;
  /** First write at the source until the last partner had every document with the right _rev. */
  ms: number;
  /** Documents delivered to every partner per second: docs / ms (when the bound ran out: what every partner had / ms). */
  docsPerSec: number;
  /** Writing the documents at the source (part of `ms`). */
  loadMs: number;
  /** Per partner: first write until it had every document (ms). */
  perPartnerMs: number[];
  /** Per partner: documents there with the right _rev when the phase ended. */
  arrived: number[];
  /** CPU-seconds per process over the phase (keys: couchS, hermodS, couchP1…, hermodP1…, prosody, ejabberd, bench). */
  cpuSeconds: Record<string, number>;
  /** % of one core per process over the phase, and "other" (the rest of the machine). */
  cpuPct: Record<string, number>;
  /** Source site CPU per document, ms: (couchS + hermodS) CPU / docs. */
  sourceCpuMsPerDoc: number;
  /** Partner sites' CPU per document delivered to one partner, ms: Σ (couchP + hermodP) / (docs × partners). */
  partnerCpuMsPerDoc: number;
  /** Requests partner 1's pouchdb-server answered during the phase, by method and kind (`POST _bulk_docs`, `GET _changes`, …; from its request log). */
  partnerRequests?: Record<string, number>;
  /** With `cpuProf`: where the source Hermod's and partner 1's Hermod's main threads spent the phase. */
  profile?: Array<{ site: 'source' | 'partner 1'; summary: ProfileSummary }>;
}

export interface FirstSyncResult {
  docs: number;
  /** Loading the documents into the source database beforehand (not part of `ms`). */
  loadMs: number;
  hermod: {
    /** Source Hermod's spawn until partner 1 had every document. */
    ms: number;
    docsPerSec: number;
    arrived: number;
    /** Peak resident set (max of VmHWM and the sampled VmRSS), MiB. */
    peakRssMiB: { source: number; partner: number };
    /** Resident set when the last document arrived, MiB. */
    endRssMiB: { source: number; partner: number };
    cpuPct: Record<string, number>;
  };
  /** One-shot `_replicate` of the same database by partner 1's server (absent if it failed). */
  replicate?: { ms: number; docsPerSec: number; arrived: number; cpuPct: Record<string, number> };
}

interface Ctx {
  env: XmppEnv;
  /** Temp dir for Hermod configs, logs and data. */
  dir: string;
  log: (m: string) => void;
}

/** The source server (ejabberd) and the partners' components (on Prosody) of the environment. */
function servers(env: XmppEnv): { source: ServerInfo; prosody: ServerInfo; partners: Array<{ jid: string; secret: string }> } {
  const source = env.beta;
  const prosody = env.alpha;
  if (!source || !prosody) throw new Error('the fan-out replication needs both Prosody and ejabberd');
  const partners = prosody.extraComponents.filter((c) => /^partner\d+\./.test(c.jid));
  return { source, prosody, partners };
}

/**
 * Starts `n` pouchdb-servers one after the other (several node processes starting at once on a
 * busy machine miss the devenv's 20 s start bound), each tried twice; if one still fails, stops
 * those that started and throws.
 */
async function startCouches(n: number, log: (m: string) => void): Promise<CouchServer[]> {
  const ok: CouchServer[] = [];
  try {
    for (let i = 0; i < n; i++) {
      ok.push(
        await startBenchCouch().catch((err: unknown) => {
          log(`pouchdb-server did not start (${String(err).split('\n', 1)[0]}); trying once more`);
          return startBenchCouch();
        }),
      );
    }
  } catch (err) {
    for (const c of ok) await c.destroy().catch(() => {});
    throw err;
  }
  return ok;
}

/** Stops a Hermod (SIGTERM, SIGKILL after the bound); one that had to be killed is logged with the end of its log. */
async function stopHermod(h: HermodProcess | undefined, log: (m: string) => void): Promise<void> {
  if (!h || h.exited()) return;
  await h.stop().catch((err: unknown) => log(`${String(err)}\n${tail(h.logFile, 8)}`));
}

/** One source site and `n` partner sites on fresh databases; `stop()` ends every process of it. */
interface Sites {
  src: CouchServer;
  parts: CouchServer[];
  hermodS?: HermodProcess;
  hermodP: HermodProcess[];
  pids(): Record<string, number | undefined>;
  /** Starts partner i's Hermod (0-based; resolves once it is online), under `node --cpu-prof` into `cpuProfDir` if given. */
  startPartner(i: number, name: string, cpuProfDir?: string): Promise<HermodProcess>;
  /** Starts the source's Hermod (resolves once it is online, within `timeoutMs`), under `node --cpu-prof` into `cpuProfDir` if given. */
  startSource(name: string, timeoutMs?: number, cpuProfDir?: string): Promise<HermodProcess>;
  stop(): Promise<void>;
}

async function openSites(ctx: Ctx, n: number): Promise<Sites> {
  const { source, prosody, partners } = servers(ctx.env);
  if (partners.length < n) throw new Error(`the environment has ${partners.length} partner components, ${n} wanted`);
  const [src, ...parts] = (await startCouches(1 + n, ctx.log)) as [CouchServer, ...CouchServer[]];
  // The default discovery interval (300 s), as a site would run: the partners follow the source's
  // nodes when it announces them (XEP-0060 §8.9.4), and no periodic discovery of N partners
  // adds to the source's CPU per document.
  const extra = (couch: CouchServer): Record<string, unknown> => ({ appDb: { url: couch.url, db: APP } });
  const sites: Sites = {
    src,
    parts,
    hermodP: [],
    pids() {
      const p: Record<string, number | undefined> = { bench: process.pid, couchS: src.pid(), hermodS: sites.hermodS?.pid, prosody: prosody.pid(), ejabberd: source.pid() };
      parts.forEach((c, i) => {
        p[`couchP${i + 1}`] = c.pid();
        p[`hermodP${i + 1}`] = sites.hermodP[i]?.pid;
      });
      return p;
    },
    async startPartner(i, name, cpuProfDir) {
      const comp = partners[i] as { jid: string; secret: string };
      const server = { componentJid: comp.jid, componentSecret: comp.secret, componentService: prosody.componentService };
      const h = await startBenchHermod({ ...hermodSpawnFor(server, name, ctx.dir), ...(cpuProfDir ? { cpuProfDir } : {}), extra: extra(parts[i] as CouchServer) });
      sites.hermodP[i] = h;
      return h;
    },
    async startSource(name, timeoutMs = 30_000, cpuProfDir) {
      sites.hermodS = await startBenchHermod({ ...hermodSpawnFor(source, name, ctx.dir), ...(cpuProfDir ? { cpuProfDir } : {}), extra: extra(src), timeoutMs });
      return sites.hermodS;
    },
    async stop() {
      // Partners first: at 818fd7e a partner Hermod stopped after its source (or in the middle of a
      // sync) did not end its shutdown within 15 s; one that has to be killed is logged.
      for (const h of [...sites.hermodP, sites.hermodS]) await stopHermod(h, ctx.log);
      for (const c of [src, ...parts]) await c.destroy().catch(() => {});
    },
  };
  try {
    await src.createDbs(APP, CONTENT);
    const whitelist = partners.slice(0, n).map((c) => c.jid);
    for (const tag of ['bench', 'bench2']) await src.put(APP, { _id: `hermod:tag:${tag}`, access_model: 'whitelist', whitelist });
    for (const c of parts) {
      await c.createDbs(APP, CONTENT);
      // The partner knows the source's service itself as a contact: discovery needs no disco#items.
      await c.put(CONTENT, { _id: 'contact-source', value: { _type: 'contact', title: { val: 'Source site' }, jid: { val: source.componentJid } } });
    }
  } catch (err) {
    await sites.stop();
    throw err;
  }
  return sites;
}

/**
 * Writes `docs` at the source and waits (bounded by `timeoutMs`) until every partner's `_changes`
 * shows each of them with the source's `_rev`; throws naming the first partner short of them
 * (`what`: the notes, for the message).
 */
async function deliverToAll(sites: Sites, docs: Iterable<Doc>, chunk: number, timeoutMs: number, what: string): Promise<void> {
  const watchers = await Promise.all(sites.parts.map((c) => new ChangesWatcher(c, CONTENT).fromNow()));
  const revs = await bulkLoad(sites.src, CONTENT, docs, chunk);
  const deadline = Date.now() + timeoutMs;
  const got = await Promise.all(watchers.map((w) => w.waitFor(revs, deadline)));
  const missing = got.findIndex((g) => g.arrived < revs.size);
  if (missing >= 0) throw new Error(`${what}: partner ${missing + 1} had ${got[missing]?.arrived} of ${revs.size} notes after ${timeoutMs} ms`);
}

/** Writes one note per tag at the source and waits (bounded) until every partner has both: all subscriptions are in effect. */
async function warmUp(sites: Sites, prefix: string, timeoutMs: number): Promise<void> {
  const warm: Doc[] = ['bench', 'bench2'].map((tag) => ({
    _id: `${prefix}-warm-${tag}`,
    value: { _type: 'note', title: { val: `warm-up ${tag}` }, tags: { val: [tag] }, metadata: { creator: { val: 'alice' }, deleted: { val: false } } },
  }));
  await deliverToAll(sites, warm, 10, timeoutMs, 'warm-up (one note per tag)');
}

/** The warm-up load of a round (FanoutParams.warmupDocs): `docs` notes like the timed ones (other ids, other seed) delivered to every partner. */
const warmUpLoad = (sites: Sites, prefix: string, docs: number, chunk: number, timeoutMs: number): Promise<void> =>
  deliverToAll(sites, docStream(`${prefix}-warm`, docs, 7), chunk, timeoutMs, 'warm-up load');

/** CPU-seconds per key between two samples (NaN where a process was not there at both). */
function cpuDelta(a: CpuSample, b: CpuSample): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b.cpu)) if (k !== 'machine') out[k] = (b.cpu[k] as number) - (a.cpu[k] as number);
  return out;
}

const fin = (x: number | undefined): number => (x !== undefined && Number.isFinite(x) ? x : 0);

/** The main-thread profile a Hermod wrote into `dir` on exit, summarised over `window` (ms from its start). */
async function profileOf(dir: string, window: [number, number]): Promise<ProfileSummary> {
  // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread.
  const files = (await readdir(dir)).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  if (files.length === 0) throw new Error(`no main-thread .cpuprofile in ${dir}`);
  return summariseProfile(path.join(dir, files.sort().at(-1) as string), 25, window);
}

/** One fan-out round of `system` with `n` partners. */
async function fanoutRound(ctx: Ctx, p: FanoutParams, system: System, n: number, repeat = 0): Promise<FanoutRound> {
  // The Hermods' names, data dirs and the warm-up documents follow the tag: each round its own.
  const tag = `fan${n}-${system}${repeat > 0 ? `-${repeat + 1}` : ''}`;
  const sites = await openSites(ctx, n);
  const prof = p.cpuProf && system === 'hermod' ? { source: path.join(ctx.dir, `cpuprof-${tag}-src`), partner: path.join(ctx.dir, `cpuprof-${tag}-p1`) } : undefined;
  try {
    if (system === 'hermod') {
      for (let i = 0; i < n; i++) await sites.startPartner(i, `${tag}-p${i + 1}`, i === 0 ? prof?.partner : undefined);
      await sites.startSource(`${tag}-src`, undefined, prof?.source);
      ctx.log(`${tag}: source Hermod pid ${sites.hermodS?.pid}, partner Hermods ${sites.hermodP.map((h) => h.pid).join(', ')}`);
    } else {
      for (const c of sites.parts) {
        const rep = await c.request('POST', '_replicate', { source: `${sites.src.url}/${CONTENT}`, target: CONTENT, continuous: true });
        if (rep.status >= 300) throw new Error(`_replicate continuous: HTTP ${rep.status} ${JSON.stringify(rep.json).slice(0, 300)}`);
      }
    }
    await warmUp(sites, tag, 60_000);
    if (p.warmupDocs) await warmUpLoad(sites, tag, p.warmupDocs, p.chunk, Math.max(p.phaseTimeoutMs, p.warmupDocs * n * 20));
    await sleep(1000);
    const watchers = await Promise.all(sites.parts.map((c) => new ChangesWatcher(c, CONTENT).fromNow()));
    const log0 = requestLogSize(sites.parts[0] as CouchServer);
    const c0 = sampleCpu(sites.pids());
    const t0 = performance.now();
    const revs = await bulkLoad(sites.src, CONTENT, docStream('fan', p.docs, 4), p.chunk);
    const loadMs = performance.now() - t0;
    // At least the phase bound, and 20 ms per document and partner (50 deliveries/s).
    const boundMs = Math.max(p.phaseTimeoutMs, p.docs * n * 20);
    const deadline = Date.now() + boundMs;
    const done = await Promise.all(watchers.map((w) => w.waitFor(revs, deadline)));
    const c1 = sampleCpu(sites.pids());
    const t1 = performance.now();
    const partnerRequests = requestsSince(sites.parts[0] as CouchServer, log0);
    const ms = Math.max(...done.map((d) => d.at)) - t0;
    const cpuSeconds = cpuDelta(c0, c1);
    let partnerCpu = 0;
    for (let i = 1; i <= n; i++) partnerCpu += fin(cpuSeconds[`couchP${i}`]) + fin(cpuSeconds[`hermodP${i}`]);
    const r: FanoutRound = {
      system,
      partners: n,
      docs: p.docs,
      ms,
      docsPerSec: (Math.min(...done.map((d) => d.arrived)) / ms) * 1000,
      loadMs,
      perPartnerMs: done.map((d) => d.at - t0),
      arrived: done.map((d) => d.arrived),
      cpuSeconds,
      cpuPct: cpuPercent(c0, c1),
      sourceCpuMsPerDoc: ((fin(cpuSeconds.couchS) + fin(cpuSeconds.hermodS)) / p.docs) * 1000,
      partnerCpuMsPerDoc: (partnerCpu / (p.docs * n)) * 1000,
      partnerRequests,
    };
    if (prof) {
      // The profiles are written when the processes exit; the window is the measured phase.
      const [hs, hp] = [sites.hermodS as HermodProcess, sites.hermodP[0] as HermodProcess];
      await stopHermod(hp, ctx.log);
      await stopHermod(hs, ctx.log);
      r.profile = [
        { site: 'source', summary: await profileOf(prof.source, [t0 - hs.startedAt, t1 - hs.startedAt]) },
        { site: 'partner 1', summary: await profileOf(prof.partner, [t0 - hp.startedAt, t1 - hp.startedAt]) },
      ];
    }
    const short = done.findIndex((d) => d.arrived < p.docs);
    if (short >= 0) throw Object.assign(new Error(`${tag}: partner ${short + 1} had only ${done[short]?.arrived} of ${p.docs} documents within ${boundMs} ms`), { partial: r });
    return r;
  } finally {
    await sites.stop();
  }
}

/**
 * Every fan-out round: for each partner count, `repeats` rounds of each system in alternating
 * order (`_replicate`, Hermod, then Hermod, `_replicate`, …). A failed round is logged and recorded
 * in `failures`; the others go on.
 */
export async function runFanoutReplication(ctx: Ctx, p: FanoutParams, failures: string[]): Promise<FanoutRound[]> {
  const rounds: FanoutRound[] = [];
  const repeats = Math.max(1, p.repeats ?? 1);
  for (const n of p.partners) {
    for (let repeat = 0; repeat < repeats; repeat++) {
      for (const system of repeat % 2 === 0 ? (['replicate', 'hermod'] as const) : (['hermod', 'replicate'] as const)) {
        try {
          const r = { ...(await fanoutRound(ctx, p, system, n, repeat)), repeat };
          rounds.push(r);
          ctx.log(
            `fan-out ${system} N=${n}${repeats > 1 ? ` #${repeat + 1}` : ''}: ${fmtInt(r.docs)} docs to every partner in ${fmtInt(r.ms)} ms = ${fmtInt(r.docsPerSec)} docs/s; ` +
              `source CPU ${r.sourceCpuMsPerDoc.toFixed(2)} ms/doc; cpu ${JSON.stringify(Object.fromEntries(Object.entries(r.cpuPct).map(([k, v]) => [k, Math.round(v)])))}`,
          );
        } catch (err) {
          const partial = (err as { partial?: FanoutRound }).partial;
          if (partial) rounds.push({ ...partial, repeat });
          failures.push(`fan-out ${system} N=${n}: ${String(err)}`);
          ctx.log(`fan-out ${system} N=${n} FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        }
      }
    }
  }
  return rounds;
}

/**
 * The rounds of one system and partner count as one: the first alone, or the means of the
 * figures the report compares (docs/s, time, CPU per document and per process); a partner's
 * `arrived` is its least. Undefined without rounds.
 */
export function roundOf(rounds: FanoutRound[], system: System, n: number): FanoutRound | undefined {
  const all = rounds.filter((r) => r.system === system && r.partners === n);
  const first = all[0];
  if (!first || all.length === 1) return first;
  const meanOf = (pick: (r: FanoutRound) => Record<string, number>): Record<string, number> => {
    const keys = [...new Set(all.flatMap((r) => Object.keys(pick(r))))];
    return Object.fromEntries(keys.map((k) => [k, mean(all.map((r) => pick(r)[k] ?? NaN).filter(Number.isFinite))]));
  };
  return {
    ...first,
    ms: mean(all.map((r) => r.ms)),
    docsPerSec: mean(all.map((r) => r.docsPerSec)),
    loadMs: mean(all.map((r) => r.loadMs)),
    perPartnerMs: first.perPartnerMs.map((_, i) => mean(all.map((r) => r.perPartnerMs[i] ?? NaN))),
    arrived: first.arrived.map((_, i) => Math.min(...all.map((r) => r.arrived[i] ?? 0))),
    cpuSeconds: meanOf((r) => r.cpuSeconds),
    cpuPct: meanOf((r) => r.cpuPct),
    sourceCpuMsPerDoc: mean(all.map((r) => r.sourceCpuMsPerDoc)),
    partnerCpuMsPerDoc: mean(all.map((r) => r.partnerCpuMsPerDoc)),
  };
}

/** Samples the resident set of some processes every `everyMs`; `stop()` gives the peak per key (MiB, with VmHWM). */
function rssSampler(pids: () => Record<string, number | undefined>, everyMs: number): { stop(): Record<string, { peak: number; rss: number }> } {
  const peak: Record<string, number> = {};
  const sample = (): Record<string, { peak: number; rss: number }> => {
    const now: Record<string, { peak: number; rss: number }> = {};
    for (const [k, pid] of Object.entries(pids())) {
      if (pid === undefined) continue;
      const m = memoryMiB(pid);
      peak[k] = Math.max(peak[k] ?? 0, fin(m.rss), fin(m.peak));
      now[k] = { peak: peak[k] as number, rss: m.rss };
    }
    return now;
  };
  const timer = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return sample();
    },
  };
}

/** The first sync of `docs` documents to one partner (see the head comment). */
export async function runFirstSync(ctx: Ctx, o: { docs: number; chunk: number; timeoutMs: number }): Promise<FirstSyncResult> {
  const sites = await openSites(ctx, 1);
  try {
    const part = sites.parts[0] as CouchServer;
    let t = performance.now();
    const revs = await bulkLoad(sites.src, CONTENT, docStream('sync', o.docs, 5), o.chunk);
    const loadMs = performance.now() - t;
    ctx.log(`first sync: ${fmtInt(o.docs)} documents loaded at the source in ${fmtInt(loadMs)} ms`);
    // The partner first, then the source: the time runs from the source Hermod's spawn.
    await sites.startPartner(0, 'sync-p1');
    const watch = await new ChangesWatcher(part, CONTENT).fromNow();
    const rss = rssSampler(() => ({ source: sites.hermodS?.pid, partner: sites.hermodP[0]?.pid }), 250);
    let c0 = sampleCpu(sites.pids());
    c0.cpu.hermodS = 0; // spawned during the phase: counts from zero
    const spawn = sites.startSource('sync-src', 120_000);
    // The source's spawn time is known once its handle is; the wait for the partner runs meanwhile.
    const doneP = watch.waitFor(revs, Date.now() + o.timeoutMs);
    const hermodS = await spawn;
    const done = await doneP;
    const mem = rss.stop();
    const ms = done.at - hermodS.startedAt;
    const hermod: FirstSyncResult['hermod'] = {
      ms,
      docsPerSec: (done.arrived / ms) * 1000,
      arrived: done.arrived,
      peakRssMiB: { source: mem.source?.peak ?? NaN, partner: mem.partner?.peak ?? NaN },
      endRssMiB: { source: mem.source?.rss ?? NaN, partner: mem.partner?.rss ?? NaN },
      cpuPct: cpuPercent(c0, sampleCpu(sites.pids())),
    };
    ctx.log(
      `first sync Hermod: ${fmtInt(done.arrived)} of ${fmtInt(o.docs)} docs in ${fmtInt(ms)} ms = ${fmtInt(hermod.docsPerSec)} docs/s; ` +
        `peak RSS source ${fmtInt(hermod.peakRssMiB.source)} MiB, partner ${fmtInt(hermod.peakRssMiB.partner)} MiB`,
    );
    const result: FirstSyncResult = { docs: o.docs, loadMs, hermod };
    if (done.arrived < o.docs) throw Object.assign(new Error(`first sync: only ${done.arrived} of ${o.docs} documents at the partner within ${o.timeoutMs} ms`), { partial: result });
    for (const h of [...sites.hermodP, hermodS]) await stopHermod(h, ctx.log);

    // `_replicate` one-shot of the same database, by the partner's server, into a fresh database.
    await part.createDbs('rep_first');
    const watchRep = await new ChangesWatcher(part, 'rep_first').fromNow();
    c0 = sampleCpu(sites.pids());
    t = performance.now();
    const rep = await part.request('POST', '_replicate', { source: `${sites.src.url}/${CONTENT}`, target: 'rep_first' });
    if (rep.status >= 300) {
      ctx.log(`first sync _replicate: HTTP ${rep.status} ${JSON.stringify(rep.json).slice(0, 300)}`);
      return result;
    }
    const doneRep = await watchRep.waitFor(revs, Date.now() + o.timeoutMs);
    const msRep = doneRep.at - t;
    result.replicate = { ms: msRep, docsPerSec: (doneRep.arrived / msRep) * 1000, arrived: doneRep.arrived, cpuPct: cpuPercent(c0, sampleCpu(sites.pids())) };
    ctx.log(`first sync _replicate one-shot: ${fmtInt(doneRep.arrived)} docs in ${fmtInt(msRep)} ms = ${fmtInt(result.replicate.docsPerSec)} docs/s`);
    return result;
  } finally {
    await sites.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// report

const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : `${Math.round(v)}`);
const msPerDoc = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(2));
/** Whether every partner got every document within the round's bound. */
const complete = (r: FanoutRound): boolean => r.arrived.every((a) => a >= r.docs);
/** A figure, marked when its round stopped at the bound (its docs/s then counts what every partner had by then). */
const roundFig = (r: FanoutRound | undefined, v: string): string => (r && !complete(r) ? `${v} (incomplete)` : v);

/** Sum of the per-process values whose key matches (e.g. every partner's pouchdb-server). */
const sumOf = (rec: Record<string, number>, re: RegExp): number => Object.entries(rec).reduce((a, [k, v]) => (re.test(k) && Number.isFinite(v) ? a + v : a), 0);

/** The fan-out section: one row per partner count, Hermod against the N pulls; then CPU per process. */
export function fanoutSection(rounds: FanoutRound[], docBytesMean: number): { md: string[]; svgs: Array<{ name: string; svg: string }> } {
  const md: string[] = [];
  const counts = [...new Set(rounds.map((r) => r.partners))].sort((a, b) => a - b);
  if (counts.length === 0) return { md, svgs: [] };
  const get = (s: System, n: number): FanoutRound | undefined => roundOf(rounds, s, n);
  const repeats = Math.max(1, ...rounds.map((r) => (r.repeat ?? 0) + 1));
  const docs = rounds[0]?.docs ?? 0;
  md.push('### Fan-out: one source site feeding N partner sites');
  md.push('');
  md.push(
    `${fmtInt(docs)} Ajatus notes written at the source with \`_bulk_docs\` while every partner follows it; a round ends when the **last** partner's \`_changes\` ` +
      'shows every note with the `_rev` the source gave it. Hermod: the source site is pouchdb-server S + Hermod on ejabberd (pubsub.beta.test), partner i is its own ' +
      'pouchdb-server + Hermod on Prosody (partner<i>.alpha.test); every notification crosses s2s. `_replicate`: N continuous pull replications from S, one run by each ' +
      'partner\'s pouchdb-server. Fresh databases and processes per round. **Source CPU per document** = CPU-seconds of pouchdb-server S (+ Hermod S) over the round ÷ documents ' +
      '(from /proc/<pid>/stat); partner CPU per document = the partners\' pouchdb-servers (+ Hermods) ÷ (documents × N).' +
      (repeats > 1
        ? ` Each system ran ${repeats} rounds per N, in alternating order (\`_replicate\`, Hermod, Hermod, \`_replicate\`, …) so that a drift of the machine's speed falls on both; the first table gives their means, the second every round.`
        : ''),
  );
  md.push('');
  const rows: string[][] = [];
  for (const n of counts) {
    const h = get('hermod', n);
    const r = get('replicate', n);
    rows.push([
      String(n),
      roundFig(h, h ? fmtInt(h.docsPerSec) : '–'),
      roundFig(r, r ? fmtInt(r.docsPerSec) : '–'),
      h && r ? fmtRatio(h.docsPerSec / r.docsPerSec) : '–',
      msPerDoc(h?.sourceCpuMsPerDoc),
      msPerDoc(r?.sourceCpuMsPerDoc),
      h && r ? fmtRatio(h.sourceCpuMsPerDoc / r.sourceCpuMsPerDoc) : '–',
      msPerDoc(h?.partnerCpuMsPerDoc),
      msPerDoc(r?.partnerCpuMsPerDoc),
    ]);
  }
  md.push(
    mdTable(
      ['partners N', 'Hermod docs/s to every partner', '`_replicate` ×N docs/s', 'Hermod ÷ `_replicate`', 'Hermod source CPU ms/doc', '`_replicate` source CPU ms/doc', 'Hermod ÷ `_replicate` (CPU)', 'Hermod partner CPU ms/doc', '`_replicate` partner CPU ms/doc'],
      rows,
    ),
  );
  md.push('');
  md.push('Per round: time, slowest and fastest partner, and CPU per process in % of one core (Σ = all partners together; "other" is the rest of the machine):');
  md.push('');
  md.push(
    mdTable(
      ['system', 'N', ...(repeats > 1 ? ['round'] : []), 'ms', 'first partner done (ms)', 'load (ms)', 'couch S %', 'Hermod S %', 'Σ couch P %', 'Σ Hermod P %', 'Prosody %', 'ejabberd %', 'bench %', 'other %'],
      rounds.map((x) => [
        roundFig(x, x.system === 'hermod' ? 'Hermod' : '`_replicate`'),
        String(x.partners),
        ...(repeats > 1 ? [String((x.repeat ?? 0) + 1)] : []),
        fmtInt(x.ms),
        fmtInt(Math.min(...x.perPartnerMs)),
        fmtInt(x.loadMs),
        pct(x.cpuPct.couchS),
        x.system === 'hermod' ? pct(x.cpuPct.hermodS) : '–',
        pct(sumOf(x.cpuPct, /^couchP\d+$/)),
        x.system === 'hermod' ? pct(sumOf(x.cpuPct, /^hermodP\d+$/)) : '–',
        pct(x.cpuPct.prosody),
        pct(x.cpuPct.ejabberd),
        pct(x.cpuPct.bench),
        pct(x.cpuPct.other),
      ]),
      ['l', 'r', ...(repeats > 1 ? ['r' as const] : []), 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  md.push('');
  const withRequests = rounds.filter((x) => x.partnerRequests);
  if (withRequests.length > 0) {
    md.push("Requests partner 1's pouchdb-server answered during the round (its request log), per document delivered to it:");
    md.push('');
    const kinds = [...new Set(withRequests.flatMap((x) => Object.keys(x.partnerRequests ?? {})))].sort();
    md.push(
      mdTable(
        ['system', 'N', ...(repeats > 1 ? ['round'] : []), ...kinds.map((k) => `\`${k}\``)],
        withRequests.map((x) => [
          x.system === 'hermod' ? 'Hermod' : '`_replicate`',
          String(x.partners),
          ...(repeats > 1 ? [String((x.repeat ?? 0) + 1)] : []),
          ...kinds.map((k) => ((x.partnerRequests?.[k] ?? 0) / x.docs).toFixed(3)),
        ]),
        ['l', 'r', ...(repeats > 1 ? ['r' as const] : []), ...kinds.map(() => 'r' as const)],
      ),
    );
    md.push('');
  }
  for (const x of rounds) {
    for (const prof of x.profile ?? []) {
      const s = prof.summary;
      md.push(`#### Where the fan-out time goes, N = ${x.partners}: Hermod of the ${prof.site} (\`node --cpu-prof\`, the measured phase)`);
      md.push('');
      md.push(`Profiled window ${fmtInt(s.durationMs)} ms, main thread busy ${fmtInt(s.busyMs)} ms (${Math.round(100 - s.idlePct)} %), ${(s.busyMs / x.docs).toFixed(2)} ms per document.`);
      md.push('');
      md.push(...profileTables(s, { areas: 10, topSelf: 15, inclusive: 15 }));
    }
  }
  const series = (value: (r: FanoutRound) => number, names: Record<System, string>): Array<{ name: string; values: number[] }> =>
    (['hermod', 'replicate'] as const).map((s) => ({ name: names[s], values: counts.map((n) => (get(s, n) ? value(get(s, n) as FanoutRound) : NaN)) }));
  const groups = counts.map((n) => `N = ${n}`);
  const svgs = [
    {
      name: 'fanout',
      svg: barChart({
        title: 'Replication fan-out: documents/s delivered to every partner',
        subtitle: `${fmtInt(docs)} Ajatus notes (~${(docBytesMean / 1024).toFixed(1)} KiB) written at one source, N partners`,
        yLabel: 'documents/s',
        groups,
        series: series((r) => r.docsPerSec, { hermod: 'Hermod (publish once, XMPP to N partners)', replicate: 'N × _replicate pulls (pouchdb-server)' }),
      }),
    },
    {
      name: 'fanout-cpu',
      svg: barChart({
        title: 'Replication fan-out: source site CPU per document',
        subtitle: 'CPU ms per document: pouchdb-server S + Hermod S, against pouchdb-server S serving N pulls',
        yLabel: 'CPU ms / document',
        groups,
        series: series((r) => r.sourceCpuMsPerDoc, { hermod: 'Hermod: couch S + Hermod S', replicate: 'N × _replicate: couch S' }),
      }),
    },
  ];
  return { md, svgs };
}

/** The first-sync section: time and peak resident memory of both Hermods, and `_replicate`'s time. */
export function firstSyncSection(f: FirstSyncResult): string[] {
  const md: string[] = [];
  md.push(`### First sync of ${fmtInt(f.docs)} documents`);
  md.push('');
  md.push(
    `${fmtInt(f.docs)} notes loaded into the source database beforehand (${fmtInt(f.loadMs)} ms); partner 1's Hermod running; the time runs from the source Hermod's spawn ` +
      'until the partner\'s `_changes` shows every note. Peak RSS: the larger of VmHWM and VmRSS sampled every 250 ms (/proc/<pid>/status). ' +
      '`_replicate`: one-shot pull of the same database by the partner\'s pouchdb-server into a fresh one.',
  );
  md.push('');
  const h = f.hermod;
  const rows = [
    [h.arrived < f.docs ? `Hermod S → Hermod P1 (**incomplete**: ${fmtInt(h.arrived)} of ${fmtInt(f.docs)} when the bound ran out)` : 'Hermod S → Hermod P1', fmtInt(h.arrived), fmtInt(h.ms), fmtInt(h.docsPerSec), f.replicate ? fmtRatio(h.docsPerSec / f.replicate.docsPerSec) : '–', fmtInt(h.peakRssMiB.source), fmtInt(h.peakRssMiB.partner), `${fmtInt(h.endRssMiB.source)} / ${fmtInt(h.endRssMiB.partner)}`],
  ];
  if (f.replicate) rows.push(['`_replicate` one-shot', fmtInt(f.replicate.arrived), fmtInt(f.replicate.ms), fmtInt(f.replicate.docsPerSec), '', '–', '–', '–']);
  md.push(mdTable(['system', 'docs', 'ms', 'docs/s', 'Hermod ÷ `_replicate`', 'peak RSS Hermod S (MiB)', 'peak RSS Hermod P1 (MiB)', 'RSS at the end S / P1 (MiB)'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r']));
  md.push('');
  return md;
}

/** One target of issue 15: what is compared, the measured ratio, the goal, and whether it is met. */
export interface Target {
  what: string;
  measured: string;
  /** Hermod's figure ÷ `_replicate`'s, or the measured value in `unit`. */
  value: number;
  /** Default: a ratio. */
  unit?: 'MiB';
  goal: string;
  /** `value` meets the goal if `value >= min` or `value <= max`. */
  min?: number;
  max?: number;
  note?: string;
}

/** Met, or missed with by how much (the factor still needed). */
export function verdict(t: Target): string {
  if (!Number.isFinite(t.value)) return 'not measured';
  if (t.min !== undefined) return t.value >= t.min ? '**met**' : `missed: needs ${(t.min / t.value).toFixed(2)}× more`;
  if (t.max !== undefined) return t.value <= t.max ? '**met**' : `missed: ${(t.value / t.max).toFixed(2)}× over`;
  return '–';
}

/** The targets table (issue 15), from whatever parts of the scenario ran. */
export function targetsSection(t: Target[]): string[] {
  if (t.length === 0) return [];
  return [
    '### Targets (issue 15; ratios within this run)',
    '',
    mdTable(
      ['target', 'measured', 'ratio / value', 'goal', 'verdict'],
      t.map((x) => [x.what, x.measured, x.unit ? `${fmtInt(x.value)} ${x.unit}` : fmtRatio(x.value), x.goal, verdict(x) + (x.note ? ` (${x.note})` : '')]),
      ['l', 'l', 'r', 'l', 'l'],
    ),
    '',
  ];
}

/** The fan-out and first-sync targets of issue 15 (N = the largest partner count measured, 4 in a full run). */
export function fanoutTargets(rounds: FanoutRound[], f: FirstSyncResult | undefined): Target[] {
  const out: Target[] = [];
  const n = Math.max(0, ...rounds.map((r) => r.partners));
  const h = roundOf(rounds, 'hermod', n);
  const r = roundOf(rounds, 'replicate', n);
  const notes = [
    ...(n === 4 ? [] : [`measured at N = ${n}; the target is for N = 4`]),
    ...([h, r].some((x) => x && !complete(x)) ? ['a round stopped at its bound: its docs/s counts what every partner had by then'] : []),
  ];
  const note = notes.length ? notes.join('; ') : undefined;
  if (h || r) {
    out.push({
      what: `N = ${n} partners: documents/s delivered to every partner`,
      measured: `${fmtInt(h?.docsPerSec ?? NaN)} vs ${fmtInt(r?.docsPerSec ?? NaN)} docs/s`,
      value: (h?.docsPerSec ?? NaN) / (r?.docsPerSec ?? NaN),
      goal: `≥ 1.0× the ${n} pulls`,
      min: 1,
      ...(note ? { note } : {}),
    });
    out.push({
      what: `N = ${n} partners: source site CPU per document`,
      measured: `${msPerDoc(h?.sourceCpuMsPerDoc)} vs ${msPerDoc(r?.sourceCpuMsPerDoc)} ms`,
      value: (h?.sourceCpuMsPerDoc ?? NaN) / (r?.sourceCpuMsPerDoc ?? NaN),
      goal: '≤ 1.0× `_replicate`\'s',
      max: 1,
      ...(note ? { note } : {}),
    });
  }
  if (f) {
    const notes = [
      ...(f.docs === 100_000 ? [] : [`measured at ${fmtInt(f.docs)} documents; the target is for 100 000`]),
      ...(f.hermod.arrived < f.docs ? [`the sync stopped at the bound after ${fmtInt(f.hermod.arrived)} documents`] : []),
    ];
    const fnote = notes.length ? notes.join('; ') : undefined;
    for (const [site, v] of [
      ['source', f.hermod.peakRssMiB.source],
      ['partner', f.hermod.peakRssMiB.partner],
    ] as const) {
      out.push({ what: `first sync: peak RSS of the ${site} Hermod`, measured: `${fmtInt(v)} MiB`, value: v, unit: 'MiB', goal: '< 300 MiB', max: 300, ...(fnote ? { note: fnote } : {}) });
    }
  }
  return out;
}
