// Reads a V8 .cpuprofile (node --cpu-prof) and summarises where the time went: self time per
// function, per area (a file under src/, an npm package, Node internals, GC), and inclusive time
// of Hermod's own functions. Percentages are of busy time (samples that are not "(idle)").

import { readFile } from 'node:fs/promises';
import { fmtMs, mdTable } from './stats.ts';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
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
  const key = (n: ProfileNode): string => `${n.callFrame.functionName || '(anonymous)'}\u0000${areaOf(n.callFrame.url, n.callFrame.functionName)}`;

  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const area = new Map<string, number>();
  let idle = 0;
  let total = 0;
  const { samples, timeDeltas } = prof;
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
    // timeDeltas[i] is the time before sample i; the interval a sample stands for follows it.
    const dt = (timeDeltas[i + 1] ?? timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(samples[i] as number);
    if (!node) continue;
    total += dt;
    if (node.callFrame.functionName === '(idle)') {
      idle += dt;
      continue;
    }
    const k = key(node);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = areaOf(node.callFrame.url, node.callFrame.functionName);
    area.set(a, (area.get(a) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id) as ProfileNode;
      if (!n.callFrame.url.includes('/src/')) continue;
      const kk = key(n);
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + dt);
    }
  }
  const busy = total - idle;
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
    durationMs: windowMs ? last - first : (prof.endTime - prof.startTime) / 1000,
    busyMs: busy,
    idlePct: (idle / total) * 100,
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
