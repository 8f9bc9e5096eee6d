// Small statistics and formatting helpers for the benchmark reports.

export interface Percentiles {
  n: number;
  min: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

/** Percentiles (nearest rank) of the first n values of an array. */
export function percentiles(values: ArrayLike<number>, n = values.length): Percentiles {
  if (n === 0) return { n: 0, min: NaN, p50: NaN, p95: NaN, p99: NaN, max: NaN, mean: NaN };
  const sorted = Float64Array.from({ length: n }, (_, i) => values[i] as number).sort();
  const at = (q: number): number => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] as number;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] as number;
  return { n, min: sorted[0] as number, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: sorted[n - 1] as number, mean: sum / n };
}

/** Arithmetic mean; NaN for no values. */
export function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2;
}

/** Rounds for JSON output (keeps files readable). */
export function round(x: number, digits = 2): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function roundAll<T>(obj: T, digits = 2): T {
  if (typeof obj === 'number') return round(obj, digits) as unknown as T;
  if (Array.isArray(obj)) return obj.map((x) => roundAll(x, digits)) as unknown as T;
  if (obj && typeof obj === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) out[k] = roundAll(v, digits);
    return out as T;
  }
  return obj;
}

/** 12345 -> "12 345"; NaN -> "–". */
export function fmtInt(x: number): string {
  if (!Number.isFinite(x)) return '–';
  return Math.round(x)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
}

export function fmtMs(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (x >= 100) return fmtInt(x);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

export function fmtRatio(x: number): string {
  if (!Number.isFinite(x)) return '–';
  return `${x.toFixed(2)}×`;
}

export function fmtPct(x: number): string {
  if (!Number.isFinite(x)) return '–';
  return `${Math.round(x)} %`;
}

/** Markdown table. */
export function mdTable(header: string[], rows: string[][], align?: Array<'l' | 'r'>): string {
  const al = align ?? header.map((_, i) => (i === 0 ? 'l' : 'r'));
  const sep = al.map((a) => (a === 'r' ? '---:' : '---'));
  return [header, sep, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}
