// Reads a V8 .cpuprofile (node --cpu-prof) and summarises where the time went: self time per
// function, per area (a file under src/, an npm package, Node internals, GC), and inclusive time
// of Hermod's own functions. Percentages are of busy time (samples that are not "(idle)").
//
// Two things make a raw .cpuprofile mislead here:
// - Hermod runs bundled (dist/chunk-….js): frames are mapped back to their src/ file through the
//   bundle's source map (node:module SourceMap), so areas and the inclusive table name src/ files.
// - The bench saturates the machine: a process waiting for a core gets no samples, and the next
//   sample's time delta then spans the wait (up to ~100 ms seen). Weighting samples by their
//   deltas counted that waiting as CPU of whichever function came next (busy time ~3× the
//   process's CPU time). Each sample stands for one sampling interval (the median delta) instead.

import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { SourceMap } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtMs, mdTable } from './stats.ts';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber?: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FnTime {
  fn: string;
  where: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  file: string;
  durationMs: number;
  busyMs: number;
  idlePct: number;
  samples: number;
  topSelf: FnTime[];
  byArea: Array<{ area: string; ms: number; pct: number }>;
  /** Inclusive time of functions defined in Hermod's src/. */
  hermodInclusive: FnTime[];
}

/** Where a function lives: "src/xmpp/notifications.ts", "ltx", "node:net", "(gc)" ... */
export function areaOf(url: string, fn: string): string {
  if (!url) {
    if (fn === '(garbage collector)') return '(garbage collector)';
    if (fn === '(program)' || fn === '(idle)' || fn === '(root)') return fn;
    return '(native code)';
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  if (url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?([^/]+(?:\/[^/]+)?)/.exec(url);
    return `node:${m?.[1] ?? url.slice(5)}`;
  }
  const src = url.indexOf('/src/');
  if (src !== -1) return url.slice(src + 1).replace(/\?.*$/, '');
  const bin = url.indexOf('/bin/');
  if (bin !== -1) return url.slice(bin + 1);
  return url.replace(/^file:\/\//, '');
}

/** Source maps of bundled files, by file path (undefined: none beside the file). */
const maps = new Map<string, SourceMap | undefined>();

/**
 * The source file a frame of a bundled file (a `.js` with a `.js.map` beside it) comes from, as a
 * file:// URL; the frame's own url otherwise.
 */
function sourceUrl(frame: CallFrame): string {
  if (!frame.url.startsWith('file://') || !frame.url.includes('/dist/')) return frame.url;
  const file = fileURLToPath(frame.url);
  if (!maps.has(file)) {
    const mapFile = `${file}.map`;
    maps.set(file, existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8')) as ConstructorParameters<typeof SourceMap>[0]) : undefined);
  }
  const map = maps.get(file);
  const entry = map?.findEntry(frame.lineNumber, frame.columnNumber ?? 0) as { originalSource?: string } | undefined;
  if (!entry?.originalSource) return frame.url;
  const source = entry.originalSource.startsWith('file://') ? fileURLToPath(entry.originalSource) : path.resolve(path.dirname(file), entry.originalSource);
  return `file://${source}`;
}

/** The median of the positive time deltas (µs): the profile's sampling interval. */
function samplingInterval(deltas: number[]): number {
  const positive = deltas.filter((d) => d > 0).sort((a, b) => a - b);
  return positive[Math.floor(positive.length / 2)] ?? 1000;
}

/**
 * `windowMs`: only samples between these offsets (ms from the profile's start, which is the
 * process start) count — so that start-up (module loading, transpiling) stays out.
 */
export async function summariseProfile(file: string, top = 25, windowMs?: [number, number]): Promise<ProfileSummary> {
  const prof = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of prof.nodes) byId.set(n.id, n);
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const urls = new Map<number, string>();
  const urlOf = (n: ProfileNode): string => {
    let url = urls.get(n.id);
    if (url === undefined) urls.set(n.id, (url = sourceUrl(n.callFrame)));
    return url;
  };
  const key = (n: ProfileNode): string => `${n.callFrame.functionName || '(anonymous)'}\u0000${areaOf(urlOf(n), n.callFrame.functionName)}`;
  const ownCode = (n: ProfileNode): boolean => urlOf(n).includes('/src/') && !urlOf(n).includes('/node_modules/');

  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const area = new Map<string, number>();
  let idle = 0;
  let total = 0;
  const { samples, timeDeltas } = prof;
  const dt = samplingInterval(timeDeltas) / 1000;
  let at = 0;
  let first = Infinity;
  let last = 0;
  let counted = 0;
  for (let i = 0; i < samples.length; i++) {
    at += (timeDeltas[i] ?? 0) / 1000;
    if (windowMs && (at < windowMs[0] || at > windowMs[1])) continue;
    first = Math.min(first, at);
    last = at;
    counted++;
    const node = byId.get(samples[i] as number);
    if (!node) continue;
    total += dt;
    if (node.callFrame.functionName === '(idle)') {
      idle += dt;
      continue;
    }
    const k = key(node);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = areaOf(urlOf(node), node.callFrame.functionName);
    area.set(a, (area.get(a) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id) as ProfileNode;
      if (!ownCode(n)) continue;
      const kk = key(n);
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + dt);
    }
  }
  const busy = total - idle;
  const durationMs = windowMs ? last - first : (prof.endTime - prof.startTime) / 1000;
  const rows = (m: Map<string, number>, n: number): FnTime[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, ms]) => {
        const [fn, where] = k.split('\u0000') as [string, string];
        return { fn, where, ms, pct: (ms / busy) * 100 };
      });
  return {
    file,
    durationMs,
    busyMs: busy,
    // Of the window, not of the samples: a process waiting for a core is sampled neither busy nor idle.
    idlePct: Math.max(0, 100 - (busy / durationMs) * 100),
    samples: counted,
    topSelf: rows(self, top),
    byArea: [...area.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 16)
      .map(([a, ms]) => ({ area: a, ms, pct: (ms / busy) * 100 })),
    hermodInclusive: rows(incl, 20),
  };
}

/** The Markdown tables of a profile summary: self time by area, optionally top functions, and Hermod's functions by inclusive time. */
export function profileTables(s: ProfileSummary, o: { areas: number; topSelf?: number; inclusive: number }): string[] {
  const fnRows = (fns: FnTime[]): string[][] => fns.map((f) => [`\`${f.fn}\``, `\`${f.where}\``, fmtMs(f.ms), f.pct.toFixed(1)]);
  const out = ['Self time by area:', '', mdTable(['area', 'self ms', '% busy'], s.byArea.slice(0, o.areas).map((a) => [`\`${a.area}\``, fmtMs(a.ms), a.pct.toFixed(1)])), ''];
  if (o.topSelf) out.push('Top functions by self time:', '', mdTable(['function', 'where', 'self ms', '% busy'], fnRows(s.topSelf.slice(0, o.topSelf)), ['l', 'l', 'r', 'r']), '');
  out.push("Hermod's own functions by inclusive time (self + callees):", '', mdTable(['function', 'where', 'total ms', '% busy'], fnRows(s.hermodInclusive.slice(0, o.inclusive)), ['l', 'l', 'r', 'r']), '');
  return out;
}
