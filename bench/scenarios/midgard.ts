// midgard: Midgard objects from D-Bus at site A to the inbound spool at site B — the setup of
// test/e2e/midgard-replication.test.ts: site A is Hermod on Prosody (alpha.test) listening on its
// own private dbus-daemon, site B Hermod on ejabberd (beta.test) following A's
// /midgard_article/all over s2s and writing what arrives into its inbound spool (and signalling
// each file with SpoolWritten on its own dbus-daemon, which the benchmark listens to).
//
// Phases (each until B's spool holds every object; bounded in time):
//  - D-Bus: N midgard_article objects (new GUIDs) sent as Notified signals on A's bus from one
//    connection, as fast as the bus takes them; from the first signal until all N are in B's
//    spool (B's SpoolWritten signals give the times; the spool directory is checked at the end).
//  - spool: the same kind of N objects (other GUIDs) dropped as files into A's `midgard.spool`
//    (written under a temp name and renamed, as a watcher should); from the first file on.
//  - latency of one object: one article updated (its `revised` moved on) one signal at a time,
//    from the signal until B's SpoolWritten for that version.
// Objects: midgard_article with a parameter, 0.8–4 KiB serialized (title, abstract, an HTML
// content of a few paragraphs, the metadata midgard-core serializes), unapproved (one node).
// Runs also on its own: `node --import tsx bench/scenarios/midgard.ts [--objects N] [--edits N]`
// prints the result as JSON (how the figures before a change are taken on an older checkout).

import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import dbus from 'dbus-next';
import { startDbus, type DbusDaemon } from '../../src/devenv/dbus.ts';
import { startXmppEnv, type ServerInfo, type XmppEnv } from '../../src/devenv/index.ts';
import { cpuPercent, sampleCpu, type CpuSample } from '../lib/loadgen.ts';
import { article } from '../lib/midgard-objects.ts';
import { hermodSpawnFor, sleep, startBenchHermod, type Proc } from '../lib/procs.ts';
import { fmtInt, fmtMs, mdTable, mean, percentiles, type Percentiles } from '../lib/stats.ts';

export interface MidgardParams {
  /** Objects per throughput phase. */
  objects: number;
  /** Single updates timed (after `warmupEdits`). */
  edits: number;
  warmupEdits: number;
  /** Bound of each phase. */
  phaseTimeoutMs: number;
}

export interface MidgardPhase {
  phase: 'dbus' | 'spool';
  objects: number;
  /** Sending the signals / writing the files at A (part of `ms`). */
  loadMs: number;
  /** First signal or file until B's spool held every object. */
  ms: number;
  objectsPerSec: number;
  /** Objects in B's spool when the phase ended (== objects unless it timed out). */
  arrived: number;
  /** When A's log said the last of them was published (ms from the first signal or file). */
  publishedAtAMs?: number;
  cpuPct: Record<string, number>;
}

export interface MidgardResult {
  params: MidgardParams;
  objectBytes: { min: number; mean: number; max: number };
  phases: MidgardPhase[];
  latency?: { edits: number; ms: Percentiles; cpuPct: Record<string, number> };
  failures: string[];
}

const MGD = '/org/midgardproject/mgdschema';
const NOTIFIER = 'org.midgardproject.notifier';
/** Times of B's SpoolWritten signals by GUID (the file name is `<sequence>-<guid>.xml`). */
class SpoolWatch {
  readonly at = new Map<string, number[]>();
  private wake: (() => void) | undefined;
  private constructor(private readonly bus: ReturnType<typeof dbus.sessionBus>) {}

  static async open(address: string): Promise<SpoolWatch> {
    const bus = dbus.sessionBus({ busAddress: address });
    const w = new SpoolWatch(bus);
    await bus.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [`type='signal',interface='org.midgardproject.hermod',member='SpoolWritten'`] }));
    bus.on('message', (m: InstanceType<typeof dbus.Message>) => {
      if (m.member !== 'SpoolWritten' || typeof m.body[0] !== 'string') return;
      const guid = /-([0-9a-f]{32})\.xml$/.exec(m.body[0])?.[1];
      if (!guid) return;
      const list = w.at.get(guid) ?? [];
      list.push(performance.now());
      w.at.set(guid, list);
      w.wake?.();
    });
    return w;
  }

  /** Resolves when each GUID has `count` files (by default 1) or at the deadline: the time the last arrived, and how many did. */
  async waitFor(guids: string[], deadline: number, count = 1): Promise<{ at: number; arrived: number }> {
    for (;;) {
      let arrived = 0;
      let last = 0;
      for (const g of guids) {
        const t = this.at.get(g);
        if (t && t.length >= count) {
          arrived++;
          last = Math.max(last, t[count - 1] as number);
        }
      }
      if (arrived === guids.length || Date.now() > deadline) return { at: last || performance.now(), arrived };
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
  }

  close(): void {
    this.bus.disconnect();
  }
}

/** Sends Notified signals from one connection as fast as the bus takes them; resolves once the bus has them all. */
async function emitAll(address: string, signals: Array<{ path: string; xml: string }>): Promise<void> {
  const bus = dbus.sessionBus({ busAddress: address });
  try {
    for (const [i, s] of signals.entries()) {
      bus.send(dbus.Message.newSignal(s.path, NOTIFIER, 'Notified', 's', [s.xml]));
      // A round trip now and then: the socket is written as the daemon reads, not buffered without bound.
      if (i % 200 === 199) await bus.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId' }));
    }
    await bus.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId' }));
  } finally {
    bus.disconnect();
  }
}

/** The GUIDs among the files in a spool directory. */
async function spoolGuids(dir: string): Promise<Set<string>> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return new Set(names.flatMap((n) => /-([0-9a-f]{32})\.xml$/.exec(n)?.[1] ?? []));
}

/** The whole scenario in its own XMPP environment and two dbus-daemons (see the head comment). */
export async function runMidgard(p: MidgardParams, log: (m: string) => void): Promise<MidgardResult> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-bench-midgard-'));
  const sizes = Array.from({ length: Math.min(p.objects, 2000) }, (_, i) => Buffer.byteLength(article('size', i).xml));
  const result: MidgardResult = {
    params: p,
    objectBytes: { min: Math.min(...sizes), mean: sizes.length ? mean(sizes) : 0, max: Math.max(...sizes) },
    phases: [],
    failures: [],
  };
  let env: XmppEnv | undefined;
  const buses: DbusDaemon[] = [];
  const procs: Proc[] = [];
  let watch: SpoolWatch | undefined;
  try {
    env = await startXmppEnv({ log: (m) => log(`devenv: ${m}`) });
    const alpha = env.alpha as ServerInfo;
    const beta = env.beta as ServerInfo;
    const [busA, busB] = [await startDbus(path.join(dir, 'bus-a')), await startDbus(path.join(dir, 'bus-b'))];
    buses.push(busA, busB);
    const spoolA = path.join(dir, 'a-spool');
    const inboundB = path.join(dir, 'b-inbound');
    const hermodA = await startBenchHermod({
      ...hermodSpawnFor(alpha, 'site-a', dir),
      ...(process.env.HERMOD_BENCH_MIDGARD_PROF ? { cpuProfDir: process.env.HERMOD_BENCH_MIDGARD_PROF } : {}),
      extra: {
        midgard: { bus: busA.address, spool: spoolA, inbound: path.join(dir, 'a-inbound'), access: { '*': { access_model: 'whitelist', whitelist: [beta.componentJid] } }, discoveryIntervalSeconds: 1 },
      },
    });
    procs.push(hermodA);
    const hermodB = await startBenchHermod({
      ...hermodSpawnFor(beta, 'site-b', dir),
      extra: { midgard: { bus: busB.address, inbound: inboundB, partners: [`alice@${alpha.domain}`], discoveryIntervalSeconds: 1 } },
    });
    procs.push(hermodB);
    await hermodA.waitForLog((l) => l.msg === 'listening for Midgard signals', 'A listening on its bus');
    await hermodB.waitForLog((l) => l.msg === 'listening for Midgard signals', 'B listening on its bus');
    log(`site-a (pid ${hermodA.pid}) and site-b (pid ${hermodB.pid}) online`);
    watch = await SpoolWatch.open(busB.address);
    const pids = (): Record<string, number | undefined> => ({
      bench: process.pid,
      hermodA: hermodA.pid,
      hermodB: hermodB.pid,
      prosody: alpha.pid(),
      ejabberd: beta.pid(),
      dbusA: busA.pid,
      dbusB: busB.pid,
    });

    // Warm-up: the first object creates A's node; B subscribes on its next discovery and catches up.
    const warm = article('warm', 0);
    await emitAll(busA.address, [{ path: `${MGD}/midgard_article/create`, xml: warm.xml }]);
    if ((await watch.waitFor([warm.guid], Date.now() + 60_000)).arrived !== 1) throw new Error('warm-up object not in B’s spool within 60 s');
    log('B follows A: warm-up object arrived');

    // -- D-Bus
    const viaBus = Array.from({ length: p.objects }, (_, i) => article('dbus', i));
    let c0 = sampleCpu(pids());
    let t0 = performance.now();
    let wall0 = Date.now();
    await emitAll(busA.address, viaBus.map((a) => ({ path: `${MGD}/midgard_article/create`, xml: a.xml })));
    let loadMs = performance.now() - t0;
    let done = await watch.waitFor(viaBus.map((a) => a.guid), Date.now() + p.phaseTimeoutMs);
    result.phases.push(await phase('dbus', p.objects, t0, loadMs, done, c0, pids(), inboundB, viaBus.map((a) => a.guid)));
    (result.phases.at(-1) as MidgardPhase).publishedAtAMs = await lastPublished(hermodA, viaBus, wall0);
    log(`midgard D-Bus: ${describe(result.phases.at(-1) as MidgardPhase)}`);

    // -- spool
    const viaSpool = Array.from({ length: p.objects }, (_, i) => article('spool', i));
    await mkdir(spoolA, { recursive: true });
    c0 = sampleCpu(pids());
    t0 = performance.now();
    wall0 = Date.now();
    for (const [i, a] of viaSpool.entries()) {
      const name = `${String(i).padStart(6, '0')}.xml`;
      await writeFile(path.join(spoolA, `.${name}.tmp`), a.xml);
      await rename(path.join(spoolA, `.${name}.tmp`), path.join(spoolA, name));
    }
    loadMs = performance.now() - t0;
    done = await watch.waitFor(viaSpool.map((a) => a.guid), Date.now() + p.phaseTimeoutMs);
    result.phases.push(await phase('spool', p.objects, t0, loadMs, done, c0, pids(), inboundB, viaSpool.map((a) => a.guid)));
    (result.phases.at(-1) as MidgardPhase).publishedAtAMs = await lastPublished(hermodA, viaSpool, wall0);
    log(`midgard spool: ${describe(result.phases.at(-1) as MidgardPhase)}`);

    // -- latency of one object, one update at a time
    const ms: number[] = [];
    const one = article('edit', 0);
    for (let i = 0; i < p.warmupEdits + p.edits; i++) {
      if (i === p.warmupEdits) c0 = sampleCpu(pids());
      const v = article('edit', 0, i + 1);
      const start = performance.now();
      await emitAll(busA.address, [{ path: `${MGD}/midgard_article/${i === 0 ? 'create' : 'update'}`, xml: v.xml }]);
      const got = await watch.waitFor([one.guid], Date.now() + 30_000, i + 1);
      if (got.arrived !== 1) throw new Error(`update ${i} not in B’s spool within 30 s`);
      if (i >= p.warmupEdits) ms.push(got.at - start);
      await sleep(20);
    }
    result.latency = { edits: p.edits, ms: percentiles(ms), cpuPct: cpuPercent(c0, sampleCpu(pids())) };
    log(`midgard latency of one object: p50 ${fmtMs(result.latency.ms.p50)} ms, p95 ${fmtMs(result.latency.ms.p95)} ms`);
  } catch (err) {
    result.failures.push(String(err));
    log(`midgard FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    watch?.close();
    for (const proc of procs) await proc.stop().catch(() => {});
    for (const bus of buses) await bus.stop().catch(() => {});
    await env?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
  return result;
}

/** When A logged the publication of the last of `objects` (ms after `wall0`), if it did. */
async function lastPublished(hermod: { log(): Promise<Array<Record<string, unknown>>> }, objects: Array<{ guid: string }>, wall0: number): Promise<number | undefined> {
  const guids = new Set(objects.map((o) => o.guid));
  const times = (await hermod.log()).filter((l) => l.msg === 'published midgard object' && guids.has(l.guid as string)).map((l) => Number(l.time));
  return times.length === guids.size ? Math.max(...times) - wall0 : undefined;
}

async function phase(name: MidgardPhase['phase'], objects: number, t0: number, loadMs: number, done: { at: number; arrived: number }, c0: CpuSample, pids: Record<string, number | undefined>, inbound: string, guids: string[]): Promise<MidgardPhase> {
  const ms = done.at - t0;
  const r: MidgardPhase = { phase: name, objects, loadMs, ms, objectsPerSec: (done.arrived / ms) * 1000, arrived: done.arrived, cpuPct: cpuPercent(c0, sampleCpu(pids)) };
  const inSpool = await spoolGuids(inbound);
  const missing = guids.filter((g) => !inSpool.has(g)).length;
  if (done.arrived < objects || missing > 0) throw new Error(`${name}: ${done.arrived} of ${objects} objects signalled by B within the time bound, ${missing} missing from its spool`);
  return r;
}

/** CPU milliseconds a process spent per object over a phase. */
const cpuPerObject = (r: MidgardPhase, key: string): number => (((r.cpuPct[key] ?? NaN) / 100) * r.ms) / r.objects;

const describe = (r: MidgardPhase): string =>
  `${r.objects} objects in ${fmtInt(r.ms)} ms = ${fmtInt(r.objectsPerSec)} objects/s (load ${fmtInt(r.loadMs)} ms, all published at A after ${r.publishedAtAMs === undefined ? '–' : fmtInt(r.publishedAtAMs)} ms); CPU ms/object A ${cpuPerObject(r, 'hermodA').toFixed(2)} B ${cpuPerObject(r, 'hermodB').toFixed(2)}; cpu ${JSON.stringify(Object.fromEntries(Object.entries(r.cpuPct).map(([k, v]) => [k, Math.round(v)])))}`;

const CPU_KEYS: Array<[string, string]> = [
  ['hermodA', 'Hermod A'],
  ['hermodB', 'Hermod B'],
  ['prosody', 'Prosody'],
  ['ejabberd', 'ejabberd'],
  ['dbusA', 'dbus A'],
  ['dbusB', 'dbus B'],
  ['bench', 'bench'],
  ['other', 'other'],
];

/** The scenario's Markdown. */
export function midgardReport(r: MidgardResult): { md: string } {
  const pct = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? '–' : `${Math.round(v)}`);
  const lines = ['## Midgard replication (objects from D-Bus at A to the inbound spool at B)', ''];
  lines.push(
    `${fmtInt(r.params.objects)} midgard_article objects per phase (${fmtInt(r.objectBytes.min)}–${fmtInt(r.objectBytes.max)} bytes serialized, mean ${fmtInt(r.objectBytes.mean)}; with one parameter each), ` +
      'site A (Hermod on Prosody, its own dbus-daemon) → s2s → site B (Hermod on ejabberd) writing its inbound spool; a phase ends when B has signalled (SpoolWritten) a spool file for every object, checked against the directory. ' +
      'D-Bus: Notified signals sent from one connection as fast as the bus takes them; spool: the same kind of objects dropped as files into A\'s `midgard.spool`.',
  );
  lines.push('');
  lines.push(
    mdTable(
      ['source at A', 'objects', 'load (ms)', 'published at A (ms)', 'in B\'s spool (ms)', 'objects/s', 'CPU ms per object: Hermod A / B', ...CPU_KEYS.map(([, l]) => `${l} %`)],
      r.phases.map((x) => [
        x.phase === 'dbus' ? 'D-Bus signals' : 'spool files',
        fmtInt(x.objects),
        fmtInt(x.loadMs),
        x.publishedAtAMs === undefined ? '–' : fmtInt(x.publishedAtAMs),
        fmtInt(x.ms),
        fmtInt(x.objectsPerSec),
        `${cpuPerObject(x, 'hermodA').toFixed(2)} / ${cpuPerObject(x, 'hermodB').toFixed(2)}`,
        ...CPU_KEYS.map(([k]) => pct(x.cpuPct[k])),
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', ...CPU_KEYS.map((): 'r' => 'r')],
    ),
  );
  lines.push('');
  if (r.latency) {
    lines.push(`Latency of one object (${r.latency.edits} updates of one article, one at a time): D-Bus signal at A until B's SpoolWritten for that version.`);
    lines.push('');
    lines.push(
      mdTable(
        ['p50 (ms)', 'p95 (ms)', 'max (ms)', ...CPU_KEYS.map(([, l]) => `${l} %`)],
        [[fmtMs(r.latency.ms.p50), fmtMs(r.latency.ms.p95), fmtMs(r.latency.ms.max), ...CPU_KEYS.map(([k]) => pct(r.latency?.cpuPct[k]))]],
        ['r', 'r', 'r', ...CPU_KEYS.map((): 'r' => 'r')],
      ),
    );
    lines.push('');
  }
  lines.push('CPU columns: % of one core per process over the phase; "other" is the rest of the machine (anything above a few % disturbs the figures).');
  lines.push('');
  if (r.failures.length) lines.push('Failed parts of this run:', '', ...r.failures.map((f) => `- ${f}`), '');
  return { md: lines.join('\n') + '\n' };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { objects: { type: 'string' }, edits: { type: 'string' } } });
  const objects = Number(values.objects ?? 5000);
  const edits = Number(values.edits ?? 50);
  const log = (m: string): void => void process.stderr.write(`[midgard] ${m}\n`);
  runMidgard({ objects, edits, warmupEdits: 5, phaseTimeoutMs: Math.max(120_000, objects * 50) }, log).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.stderr.write(midgardReport(r).md);
      process.exit(r.failures.length ? 1 : 0);
    },
    (err: unknown) => {
      log(String(err));
      process.exit(1);
    },
  );
}
