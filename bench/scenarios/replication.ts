// replication: Ajatus/CouchDB documents from a source CouchDB-API database to a target one
// through two Hermods and s2s — exactly the setup of test/e2e/ajatus-replication.test.ts: site A
// is Hermod on Prosody (alpha.test) over pouchdb-server A, site B Hermod on ejabberd (beta.test)
// over pouchdb-server B, B following A's tag nodes — against the CouchDB-API server's own
// `_replicate` between two databases on the same two servers (pull, run by server B).
//
// Phases (each measured until every document is at B with the _rev A gave it, read from B's
// _changes feed; bounded in time):
//  - first publish: N documents written with _bulk_docs into A's content database before A's
//    Hermod starts (B's runs already); from A's spawn until all N are at B.
//    vs `_replicate` one-shot of N documents already in the source database.
//  - live: both Hermods running and subscribed; N new documents written with _bulk_docs (chunks)
//    into A's content database; from the first write until all N are at B.
//    vs continuous `_replicate`, started before the writes.
//  - latency of one edit: PUT at A until B's _changes shows the new _rev (edits one at a time).
// Documents: Ajatus notes of ~1–2 KiB (title, text, metadata); every document is in tag
// `bench`, every fourth also in `bench2` (so it is published to two nodes).

import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CouchServer } from '../../src/devenv/couchdb.ts';
import { startXmppEnv, type ServerInfo, type XmppEnv } from '../../src/devenv/index.ts';
import { bulkLoad, ChangesWatcher, startBenchCouch, docStats, docStream, makeDocs, requestLogSize, requestsSince, type Doc } from '../lib/couch-docs.ts';
import { profileTables, summariseProfile, type ProfileSummary } from '../lib/cpuprofile.ts';
import { cpuPercent, sampleCpu, type CpuSample } from '../lib/loadgen.ts';
import { hermodSpawnFor, sleep, startBenchHermod, waitForQuiet, type Proc } from '../lib/procs.ts';
import { fmtInt, fmtMs, fmtRatio, mdTable, percentiles, type Percentiles } from '../lib/stats.ts';
import { barChart, hbarChart } from '../lib/svg.ts';
import {
  fanoutSection,
  fanoutTargets,
  firstSyncSection,
  partnerLabels,
  runFanoutReplication,
  runFirstSync,
  targetsSection,
  type FanoutRound,
  type FirstSyncResult,
  type System,
  type Target,
} from './replication-fanout.ts';

export interface ReplicationParams {
  /** Documents per throughput phase. */
  docs: number;
  /** Documents per _bulk_docs request. */
  chunk: number;
  /** Single edits timed (after `warmupEdits`). */
  edits: number;
  warmupEdits: number;
  /** Bound of each phase (all documents at B, or give up). */
  phaseTimeoutMs: number;
  /** Run both Hermods under `node --cpu-prof` and summarise the live phase. */
  cpuProf?: boolean;
  /** One source site feeding N partner sites (replication-fanout.ts); absent or no counts: not run. */
  fanout?: { partners: number[]; docs: number; repeats?: number; warmupDocs?: number };
  /** Documents of the first sync to one partner (replication-fanout.ts); absent or 0: not run. */
  firstSyncDocs?: number;
}

export type { System };

export interface PhaseResult {
  system: System;
  phase: 'first-publish' | 'live';
  docs: number;
  /** Start of the phase until every document was at B with the right _rev. */
  ms: number;
  docsPerSec: number;
  /** Writing the documents at A (live: part of `ms`; first publish: before it). */
  loadMs: number;
  /** Documents at B with the right _rev when the phase ended (== docs unless it timed out). */
  arrived: number;
  /** Hermod first publish: A's own "first publish" log done (ms from A's spawn). */
  publishedAtAMs?: number;
  cpuPct: Record<string, number>;
}

export interface LatencyResult {
  system: System;
  edits: number;
  ms: Percentiles;
  cpuPct: Record<string, number>;
  /** Requests per timed edit at each site's CouchDB-API server, by method and last path segment (the bench's own PUT and longpoll included). */
  requestsPerEdit?: { A: Record<string, number>; B: Record<string, number> };
}

export interface ReplicationResult {
  params: ReplicationParams;
  docBytes: { min: number; mean: number; max: number };
  twoTags: number;
  phases: PhaseResult[];
  latency: LatencyResult[];
  profile?: Array<{ site: 'A' | 'B'; summary: ProfileSummary }>;
  /** Fan-out rounds (one per partner count and system). */
  fanout?: FanoutRound[];
  firstSync?: FirstSyncResult;
  /** Parts that failed (the others are reported). */
  failures?: string[];
}

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';

// ---------------------------------------------------------------------------------------------
// the run

/**
 * The whole replication scenario in one XMPP environment (Prosody also accepting the partner
 * components of the fan-out): the one-partner phases, the fan-out rounds, the first sync, as
 * `p` asks. A failed fan-out round or first sync is recorded in `failures` and the rest goes on;
 * a failed one-partner phase throws (with what was measured before in `partial`).
 */
export async function runReplication(p: ReplicationParams, log: (m: string) => void): Promise<ReplicationResult> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-bench-repl-'));
  let env: XmppEnv | undefined;
  const result: ReplicationResult = { params: p, docBytes: { min: 0, mean: 0, max: 0 }, twoTags: 0, phases: [], latency: [], failures: [] };
  const maxPartners = Math.max(0, ...(p.fanout?.partners ?? []), p.firstSyncDocs ? 1 : 0);
  try {
    env = await startXmppEnv({ extraComponents: partnerLabels(maxPartners), log: (m) => log(`devenv: ${m}`) });
    const failures = result.failures as string[];
    if (p.docs > 0) {
      try {
        await runOnePartner(env, dir, p, result, log);
      } catch (err) {
        const partial = (err as { partial?: PhaseResult }).partial;
        if (partial) result.phases.push(partial);
        failures.push(`one partner: ${String(err)}`);
        log(`replication, one partner FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
    if (!result.docBytes.mean) {
      const st = docStats(docStream('fan', Math.min(p.fanout?.docs || 1000, 5000), 4));
      result.docBytes = st.bytes;
      result.twoTags = st.twoTags;
    }
    const ctx = { env, dir, log };
    if (p.fanout && p.fanout.partners.length > 0) {
      result.fanout = await runFanoutReplication(ctx, { ...p.fanout, chunk: p.chunk, phaseTimeoutMs: p.phaseTimeoutMs, ...(p.cpuProf ? { cpuProf: true } : {}) }, failures);
    }
    if (p.firstSyncDocs) {
      try {
        // At least the phase bound, and 20 ms per document (50 docs/s) for a big one.
        result.firstSync = await runFirstSync(ctx, { docs: p.firstSyncDocs, chunk: p.chunk, timeoutMs: Math.max(p.phaseTimeoutMs, p.firstSyncDocs * 20) });
      } catch (err) {
        const partial = (err as { partial?: FirstSyncResult }).partial;
        if (partial) result.firstSync = partial;
        failures.push(`first sync of ${p.firstSyncDocs} documents: ${String(err)}`);
        log(`first sync FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
    return result;
  } finally {
    await env?.stop().catch(() => {});
    if (process.env.HERMOD_KEEP_TMP !== '1') await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** One source, one target: first publish, live changes, one edit; Hermod, then `_replicate` (see the head comment). */
async function runOnePartner(env: XmppEnv, dir: string, p: ReplicationParams, result: ReplicationResult, log: (m: string) => void): Promise<void> {
  const couches: CouchServer[] = [];
  const procs: Proc[] = [];
  try {
    // Whatever started is stopped in `finally`, also when another start failed.
    const started = await Promise.allSettled([startBenchCouch(), startBenchCouch()]);
    for (const s of started) if (s.status === 'fulfilled') couches.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const [couchA, couchB] = couches as [CouchServer, CouchServer];
    const alpha = env.alpha as ServerInfo;
    const beta = env.beta as ServerInfo;
    await couchA.createDbs(APP, CONTENT);
    await couchB.createDbs(APP, CONTENT);
    await couchA.put(APP, { _id: 'hermod:tag:bench', access_model: 'whitelist', whitelist: [beta.componentJid] });
    await couchA.put(APP, { _id: 'hermod:tag:bench2', access_model: 'whitelist', whitelist: [beta.componentJid] });
    // B knows a person at A: discovery finds A's Hermod on alpha.test over s2s.
    await couchB.put(CONTENT, { _id: 'contact-alice', value: { _type: 'contact', title: { val: 'Alice' }, jid: { val: 'alice@alpha.test' } } });

    let hermodA: (Proc & { startedAt: number }) | undefined;
    let hermodB: (Proc & { startedAt: number }) | undefined;
    const pids = (): Record<string, number | undefined> => ({
      bench: process.pid,
      hermodA: hermodA?.pid,
      hermodB: hermodB?.pid,
      prosody: alpha.pid(),
      ejabberd: beta.pid(),
      couchA: couchA.pid(),
      couchB: couchB.pid(),
    });
    const spawnHermod = async (server: ServerInfo, couch: CouchServer, name: string): Promise<Proc & { startedAt: number }> => {
      const proc = await startBenchHermod({
        ...hermodSpawnFor(server, name, dir),
        ...(p.cpuProf ? { cpuProfDir: path.join(dir, `cpuprof-${name}`) } : {}),
        extra: { appDb: { url: couch.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } },
      });
      procs.push(proc);
      log(`${name} online (pid ${proc.pid})`);
      return proc;
    };

    // -- Hermod: first publish of an existing database
    const first = makeDocs('first', p.docs, 1);
    const stats = docStats(first);
    result.docBytes = stats.bytes;
    result.twoTags = stats.twoTags;
    let t = performance.now();
    const firstRevs = await bulkLoad(couchA, CONTENT, first, p.chunk);
    const firstLoadMs = performance.now() - t;
    hermodB = await spawnHermod(beta, couchB, 'site-b');
    const watchB = await new ChangesWatcher(couchB, CONTENT).fromNow();
    let c0 = sampleCpu(pids());
    const spawnedAt = Date.now();
    hermodA = await spawnHermod(alpha, couchA, 'site-a');
    // The phase starts at A's spawn (startedAt), not when it came online.
    let done = await watchB.waitFor(firstRevs, Date.now() + p.phaseTimeoutMs);
    const publishedAtAMs = await firstPublishDone(hermodA.logFile, spawnedAt);
    result.phases.push(phase('hermod', 'first-publish', p.docs, hermodA.startedAt, done, firstLoadMs, c0, pids(), publishedAtAMs));
    log(`hermod first publish: ${describe(result.phases.at(-1) as PhaseResult)}`);

    // -- Hermod: live changes
    const live = makeDocs('live', p.docs, 2);
    c0 = sampleCpu(pids());
    const liveFrom = { A: performance.now() - hermodA.startedAt, B: performance.now() - hermodB.startedAt };
    t = performance.now();
    const liveRevs = await bulkLoad(couchA, CONTENT, live, p.chunk);
    const liveLoadMs = performance.now() - t;
    done = await watchB.waitFor(liveRevs, Date.now() + p.phaseTimeoutMs);
    const liveTo = { A: performance.now() - hermodA.startedAt, B: performance.now() - hermodB.startedAt };
    result.phases.push(phase('hermod', 'live', p.docs, t, done, liveLoadMs, c0, pids()));
    log(`hermod live: ${describe(result.phases.at(-1) as PhaseResult)}`);

    // -- Hermod: latency of one edit
    result.latency.push(await editLatency('hermod', couchA, CONTENT, couchB, CONTENT, p, pids, log));

    if (p.cpuProf) {
      result.profile = [];
      for (const [site, proc, win] of [
        ['A', hermodA, [liveFrom.A, liveTo.A]],
        ['B', hermodB, [liveFrom.B, liveTo.B]],
      ] as const) {
        await proc.stop();
        const profDir = path.join(dir, `cpuprof-site-${site.toLowerCase()}`);
        const files = (await readdir(profDir)).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f));
        if (files.length === 0) throw new Error(`no main-thread .cpuprofile in ${profDir}`);
        result.profile.push({ site, summary: await summariseProfile(path.join(profDir, files.sort().at(-1) as string), 25, [win[0], win[1]]) });
      }
    }
    await hermodA.stop();
    await hermodB.stop();
    hermodA = undefined;
    hermodB = undefined;

    // -- _replicate one-shot (pull, run by server B) of N documents already in the source
    await couchA.createDbs('rep_once');
    await couchB.createDbs('rep_once');
    const onceRevs = await bulkLoad(couchA, 'rep_once', makeDocs('first', p.docs, 1), p.chunk);
    const watchOnce = await new ChangesWatcher(couchB, 'rep_once').fromNow();
    c0 = sampleCpu(pids());
    t = performance.now();
    const rep = await couchB.request('POST', '_replicate', { source: `${couchA.url}/rep_once`, target: 'rep_once' });
    if (rep.status >= 300 || rep.json.ok !== true) throw new Error(`_replicate: HTTP ${rep.status} ${JSON.stringify(rep.json).slice(0, 300)}`);
    done = await watchOnce.waitFor(onceRevs, Date.now() + p.phaseTimeoutMs);
    result.phases.push(phase('replicate', 'first-publish', p.docs, t, done, NaN, c0, pids()));
    log(`_replicate one-shot: ${describe(result.phases.at(-1) as PhaseResult)}`);

    // -- _replicate continuous (last: it cannot be cancelled on pouchdb-server and keeps polling)
    await couchA.createDbs('rep_cont');
    await couchB.createDbs('rep_cont');
    const watchCont = await new ChangesWatcher(couchB, 'rep_cont').fromNow();
    const cont = await couchB.request('POST', '_replicate', { source: `${couchA.url}/rep_cont`, target: 'rep_cont', continuous: true });
    if (cont.status >= 300) throw new Error(`_replicate continuous: HTTP ${cont.status} ${JSON.stringify(cont.json)}`);
    await sleep(1000);
    c0 = sampleCpu(pids());
    t = performance.now();
    const contRevs = await bulkLoad(couchA, 'rep_cont', makeDocs('live', p.docs, 2), p.chunk);
    const contLoadMs = performance.now() - t;
    done = await watchCont.waitFor(contRevs, Date.now() + p.phaseTimeoutMs);
    result.phases.push(phase('replicate', 'live', p.docs, t, done, contLoadMs, c0, pids()));
    log(`_replicate continuous: ${describe(result.phases.at(-1) as PhaseResult)}`);
    result.latency.push(await editLatency('replicate', couchA, 'rep_cont', couchB, 'rep_cont', p, pids, log));
  } finally {
    for (const proc of procs) await proc.stop().catch(() => {});
    for (const c of couches) await c.destroy().catch(() => {});
  }
}

function phase(
  system: System,
  name: PhaseResult['phase'],
  docs: number,
  from: number,
  done: { at: number; arrived: number },
  loadMs: number,
  c0: CpuSample,
  pids: Record<string, number | undefined>,
  publishedAtAMs?: number,
): PhaseResult {
  const ms = done.at - from;
  const end = sampleCpu(pids);
  // A process started during the phase (Hermod A in the first publish) counts from zero.
  const start: CpuSample = { at: c0.at, cpu: { ...c0.cpu } };
  for (const [k, v] of Object.entries(end.cpu)) if (!Number.isFinite(start.cpu[k]) && Number.isFinite(v)) start.cpu[k] = 0;
  const r: PhaseResult = { system, phase: name, docs, ms, docsPerSec: (done.arrived / ms) * 1000, loadMs, arrived: done.arrived, cpuPct: cpuPercent(start, end) };
  if (publishedAtAMs !== undefined) r.publishedAtAMs = publishedAtAMs;
  if (done.arrived < docs) throw Object.assign(new Error(`${system} ${name}: only ${done.arrived} of ${docs} documents at B within the time bound`), { partial: r });
  return r;
}

const describe = (r: PhaseResult): string =>
  `${r.docs} docs in ${fmtInt(r.ms)} ms = ${fmtInt(r.docsPerSec)} docs/s; cpu ${JSON.stringify(Object.fromEntries(Object.entries(r.cpuPct).map(([k, v]) => [k, Math.round(v)])))}`;

/** When A's log says the first publish is complete (ms after `spawnedAt`), if it does. */
async function firstPublishDone(logFile: string, spawnedAt: number): Promise<number | undefined> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    if (!line.includes('first publish of')) continue;
    try {
      const l = JSON.parse(line) as { done?: number; total?: number; time?: number };
      if (l.done !== undefined && l.done === l.total && typeof l.time === 'number') return l.time - spawnedAt;
    } catch {
      /* not JSON */
    }
  }
  return undefined;
}

/** `{"GET _changes": 2, …}` as `2.00 GET _changes, …`, most first. */
const fmtRequests = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${v.toFixed(2)} ${k}`)
    .join(', ') || 'none';

/** One document edited at the source, one edit at a time: PUT until the target's feed has the revision. */
async function editLatency(
  system: System,
  src: CouchServer,
  srcDb: string,
  dst: CouchServer,
  dstDb: string,
  p: ReplicationParams,
  pids: () => Record<string, number | undefined>,
  log: (m: string) => void,
): Promise<LatencyResult> {
  // The phase before may leave work behind after its last document arrived (a note in two tags is
  // notified on two nodes: the second copies still cross Prosody and s2s); timed edits queued
  // behind that backlog measured it, not one edit (session 6: Prosody at 41 % of a core during
  // the edits, 74.6 ms p50 against 54.2 ms alone). So the whole machine settles first (bounded).
  const left = await waitForQuiet(() => [], { maxCores: 0.2, windowMs: 250, windows: 2, timeoutMs: 30_000, log });
  log(`${system} edit latency: machine settled (${left.toFixed(2)} cores busy)`);
  const [doc] = makeDocs(`edit-${system}`, 1, 3) as [Doc];
  const watch = await new ChangesWatcher(dst, dstDb).fromNow();
  let rev = await src.put(srcDb, doc);
  await watch.waitFor(new Map([[doc._id, rev]]), Date.now() + 30_000);
  const ms: number[] = [];
  let c0 = sampleCpu(pids());
  let logs = { A: requestLogSize(src), B: requestLogSize(dst) };
  for (let i = 0; i < p.warmupEdits + p.edits; i++) {
    if (i === p.warmupEdits) {
      c0 = sampleCpu(pids());
      logs = { A: requestLogSize(src), B: requestLogSize(dst) };
    }
    const value = doc.value as { title: { val: string } };
    const edited = { ...doc, _rev: rev, value: { ...value, title: { val: `Edit ${i}` } } };
    const t0 = performance.now();
    rev = await src.put(srcDb, edited);
    const done = await watch.waitFor(new Map([[doc._id, rev]]), Date.now() + 30_000);
    if (done.arrived !== 1) throw new Error(`${system}: edit ${i} of ${doc._id} not at the target within 30 s`);
    if (i >= p.warmupEdits) ms.push(done.at - t0);
    await sleep(20);
  }
  const perEdit = (counts: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, v / Math.max(1, p.edits)]));
  const requestsPerEdit = { A: perEdit(requestsSince(src, logs.A)), B: perEdit(requestsSince(dst, logs.B)) };
  const r: LatencyResult = { system, edits: p.edits, ms: percentiles(ms), cpuPct: cpuPercent(c0, sampleCpu(pids())), requestsPerEdit };
  log(`${system} edit latency: p50 ${fmtMs(r.ms.p50)} ms, p95 ${fmtMs(r.ms.p95)} ms over ${ms.length} edits; requests per edit: A ${fmtRequests(requestsPerEdit.A)}; B ${fmtRequests(requestsPerEdit.B)}`);
  return r;
}

// ---------------------------------------------------------------------------------------------
// report

const LABEL: Record<System, string> = { hermod: 'Hermod A → s2s → Hermod B', replicate: '`_replicate` (pull by B)' };
const PHASE: Record<PhaseResult['phase'], Record<System, string>> = {
  'first-publish': { hermod: 'existing database (first publish)', replicate: 'one-shot' },
  live: { hermod: 'live changes', replicate: 'continuous' },
};
const CPU_KEYS: Array<[string, string]> = [
  ['hermodA', 'Hermod A'],
  ['hermodB', 'Hermod B'],
  ['prosody', 'Prosody'],
  ['ejabberd', 'ejabberd'],
  ['couchA', 'couch A'],
  ['couchB', 'couch B'],
  ['bench', 'bench'],
  ['other', 'other'],
];

/** The scenario's Markdown (targets, one partner, fan-out, first sync) and charts. */
export function replicationReport(r: ReplicationResult): { md: string; svgs: Array<{ name: string; svg: string }> } {
  const lines: string[] = [];
  lines.push('## Replication (Ajatus/CouchDB documents between sites)');
  lines.push('');
  const svgs: Array<{ name: string; svg: string }> = [];
  const targets = [...onePartnerTargets(r), ...fanoutTargets(r.fanout ?? [], r.firstSync)];
  lines.push(...targetsSection(targets));
  if (r.phases.length > 0) renderOnePartner(r, lines, svgs);
  if (r.fanout?.length) {
    const f = fanoutSection(r.fanout, r.docBytes.mean);
    lines.push(...f.md);
    svgs.push(...f.svgs);
  }
  if (r.firstSync) lines.push(...firstSyncSection(r.firstSync));
  if (r.failures?.length) {
    lines.push('Failed parts of this run:', '', ...r.failures.map((f) => `- ${f}`), '');
  }
  return { md: lines.join('\n') + '\n', svgs };
}

/** The one-partner targets of issue 15 from the phases and latencies measured. */
function onePartnerTargets(r: ReplicationResult): Target[] {
  const out: Target[] = [];
  const get = (s: System, ph: PhaseResult['phase']): PhaseResult | undefined => r.phases.find((x) => x.system === s && x.phase === ph);
  for (const ph of ['first-publish', 'live'] as const) {
    const h = get('hermod', ph);
    const rep = get('replicate', ph);
    if (!h || !rep) continue;
    out.push({
      what: `one partner, ${ph === 'live' ? 'live changes' : 'existing database'}: docs/s`,
      measured: `${fmtInt(h.docsPerSec)} vs ${fmtInt(rep.docsPerSec)} docs/s`,
      value: h.docsPerSec / rep.docsPerSec,
      goal: '≥ 0.5× `_replicate`',
      min: 0.5,
    });
  }
  const lh = r.latency.find((l) => l.system === 'hermod');
  const lr = r.latency.find((l) => l.system === 'replicate');
  if (lh && lr) {
    out.push({ what: 'one partner: one edit until the target has it, p50', measured: `${fmtMs(lh.ms.p50)} vs ${fmtMs(lr.ms.p50)} ms`, value: lh.ms.p50 / lr.ms.p50, goal: '≤ 1.5× `_replicate`\'s', max: 1.5 });
  }
  return out;
}

/** The one-partner tables and charts (phases, latency, profile). */
function renderOnePartner(r: ReplicationResult, lines: string[], svgs: Array<{ name: string; svg: string }>): void {
  const get = (s: System, ph: PhaseResult['phase']): PhaseResult | undefined => r.phases.find((x) => x.system === s && x.phase === ph);
  const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : `${Math.round(v)}`);
  lines.push('### One partner: site A → site B');
  lines.push('');
  lines.push(
    `${fmtInt(r.params.docs)} Ajatus notes per phase (${fmtInt(r.docBytes.min)}–${fmtInt(r.docBytes.max)} bytes of JSON, mean ${fmtInt(r.docBytes.mean)}; ` +
      `${fmtInt(r.twoTags)} in two tags, so published to two nodes), written at A with \`_bulk_docs\` in chunks of ${r.params.chunk}; ` +
      'a phase ends when B\'s `_changes` shows every document with the `_rev` A gave it. Hermod: site A (Prosody) → s2s → site B (ejabberd), ' +
      'each over its own pouchdb-server; `_replicate`: pull replication run by pouchdb-server B from A, between two fresh databases on the same two servers.',
  );
  lines.push('');
  const rows: string[][] = [];
  for (const ph of ['first-publish', 'live'] as const) {
    const rep = get('replicate', ph);
    for (const s of ['hermod', 'replicate'] as const) {
      const x = get(s, ph);
      if (!x) continue;
      rows.push([
        LABEL[s],
        PHASE[ph][s],
        fmtInt(x.docs),
        fmtInt(x.ms),
        fmtInt(x.docsPerSec),
        s === 'hermod' && rep ? fmtRatio(x.docsPerSec / rep.docsPerSec) : '',
        ...CPU_KEYS.map(([k]) => pct(x.cpuPct[k])),
      ]);
    }
  }
  lines.push(
    mdTable(
      ['system', 'phase', 'docs', 'ms', 'docs/s', 'Hermod ÷ `_replicate`', ...CPU_KEYS.map(([, l]) => `${l} %`)],
      rows,
      ['l', 'l', 'r', 'r', 'r', 'r', ...CPU_KEYS.map((): 'r' => 'r')],
    ),
  );
  lines.push('');
  const hf = get('hermod', 'first-publish');
  const hl = get('hermod', 'live');
  if (hf || hl) {
    lines.push(
      [
        hf
          ? `Hermod's first publish is timed from A's spawn (start-up ~1 s, B's discovery of A's new nodes every 1 s and its catch-up included); ` +
            `A's own log said the first publish was complete after ${hf.publishedAtAMs === undefined ? '–' : fmtInt(hf.publishedAtAMs)} ms. The ${fmtInt(hf.docs)} documents were loaded beforehand in ${fmtInt(hf.loadMs)} ms.`
          : '',
        hl ? `Live: the phase includes writing the documents at A (${fmtInt(hl.loadMs)} ms).` : '',
        'CPU columns: % of one core per process over the phase; "other" is the rest of the machine (other people\'s work: anything above a few % disturbs the figures).',
      ]
        .filter(Boolean)
        .join(' '),
    );
    lines.push('');
  }
  if (r.latency.length) {
    lines.push(`Latency of one edit at A until B's \`_changes\` has it (${r.params.edits} edits of one document, one at a time, after ${r.params.warmupEdits} warm-up ones):`);
    lines.push('');
    lines.push(
      mdTable(
        ['system', 'p50 (ms)', 'p95 (ms)', 'max (ms)', ...CPU_KEYS.map(([, l]) => `${l} %`)],
        r.latency.map((l) => [LABEL[l.system], fmtMs(l.ms.p50), fmtMs(l.ms.p95), fmtMs(l.ms.max), ...CPU_KEYS.map(([k]) => pct(l.cpuPct[k]))]),
        ['l', 'r', 'r', 'r', ...CPU_KEYS.map((): 'r' => 'r')],
      ),
    );
    lines.push('');
    for (const l of r.latency) {
      if (l.requestsPerEdit) lines.push(`- ${LABEL[l.system]}: requests per edit at A: ${fmtRequests(l.requestsPerEdit.A)}; at B: ${fmtRequests(l.requestsPerEdit.B)} (the bench's own PUT at A and \`_changes\` longpoll at B included).`);
    }
    lines.push('');
  }
  svgs.push({
    name: 'throughput',
    svg: barChart({
      title: 'Replication throughput: documents/s from A\'s database to B\'s',
      subtitle: `${fmtInt(r.params.docs)} Ajatus notes (~${(r.docBytes.mean / 1024).toFixed(1)} KiB) per phase`,
      yLabel: 'documents/s',
      groups: ['existing database (first publish / one-shot)', 'live changes (continuous)'],
      series: (['hermod', 'replicate'] as const).map((s) => ({
        name: s === 'hermod' ? 'Hermod A → s2s → Hermod B' : '_replicate (pouchdb-server)',
        values: (['first-publish', 'live'] as const).map((ph) => get(s, ph)?.docsPerSec ?? NaN),
      })),
    }),
  });
  if (r.latency.length) {
    svgs.push({
      name: 'latency',
      svg: barChart({
        title: 'Replication latency of one edit',
        subtitle: `${r.params.edits} edits, one at a time`,
        yLabel: 'ms',
        log: true,
        groups: ['p50', 'p95'],
        series: r.latency.map((l) => ({ name: l.system === 'hermod' ? 'Hermod A → s2s → Hermod B' : '_replicate continuous', values: [l.ms.p50, l.ms.p95] })),
      }),
    });
  }
  for (const prof of r.profile ?? []) {
    const s = prof.summary;
    lines.push(`### Where the replication time goes: Hermod ${prof.site} (\`node --cpu-prof\`, live phase)`);
    lines.push('');
    lines.push(`Profiled window ${fmtInt(s.durationMs)} ms, main thread busy ${fmtInt(s.busyMs)} ms (${Math.round(100 - s.idlePct)} %).`);
    lines.push('');
    lines.push(...profileTables(s, { areas: 10, inclusive: 12 }));
    svgs.push({
      name: `profile-${prof.site.toLowerCase()}`,
      svg: hbarChart({
        title: `Hermod ${prof.site} CPU profile — replication, live phase`,
        subtitle: `self time of the top functions, % of busy time (${fmtInt(s.busyMs)} ms busy)`,
        unit: '%',
        rows: s.topSelf.slice(0, 18).map((f) => ({ label: `${f.fn} · ${f.where}`, value: Math.round(f.pct * 10) / 10, color: f.where.startsWith('src/') ? 1 : f.where.startsWith('node:') || f.where.startsWith('(') ? 7 : 0 })),
      }),
    });
  }
}
