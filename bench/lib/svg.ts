// Hand-written SVG charts (no dependencies): grouped vertical bars and horizontal bars.
// Plain SVG 1.1 with inline styles, so GitHub and browsers render them as images.

const COLORS = ['#3b6fb6', '#e0813a', '#5a9e4b', '#b04a5a', '#7d5ba6', '#8c6d3f', '#3a9ca6', '#999999'];
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function shortNum(v: number): string {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(a >= 1e5 ? 0 : 1)}k`;
  if (a >= 100) return `${Math.round(v)}`;
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, '');
  if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, '');
  return v.toPrecision(2);
}

export interface BarChart {
  title: string;
  subtitle?: string;
  yLabel: string;
  groups: string[];
  series: Array<{ name: string; values: number[] }>;
  /** Logarithmic y axis (latencies). */
  log?: boolean;
  width?: number;
  height?: number;
}

/** Grouped vertical bars with value labels and a legend. */
export function barChart(c: BarChart): string {
  const W = c.width ?? 760;
  const H = c.height ?? 380;
  const m = { top: 58, right: 16, bottom: 70, left: 70 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = c.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v) && v > 0);
  const rawMax = all.length ? Math.max(...all) : 1;
  let y: (v: number) => number;
  let ticks: number[];
  if (c.log) {
    const lo = 10 ** Math.floor(Math.log10(Math.min(...(all.length ? all : [1]))));
    const hi = 10 ** Math.ceil(Math.log10(rawMax * 1.05));
    y = (v) => m.top + ph - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * ph;
    ticks = [];
    for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  } else {
    const max = niceMax(rawMax * 1.08);
    y = (v) => m.top + ph - (Math.max(0, v) / max) * ph;
    ticks = Array.from({ length: 6 }, (_, i) => (max * i) / 5);
  }
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(c.title)}</text>`);
  if (c.subtitle) out.push(`<text x="${W / 2}" y="38" text-anchor="middle" fill="#555">${esc(c.subtitle)}</text>`);
  for (const t of ticks) {
    const ty = y(t);
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${ty}" y2="${ty}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${m.left - 6}" y="${ty + 4}" text-anchor="end" fill="#444">${shortNum(t)}</text>`);
  }
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" stroke="#888"/>`);
  out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${m.top + ph}" y2="${m.top + ph}" stroke="#888"/>`);
  out.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">${esc(c.yLabel)}${c.log ? ' (log scale)' : ''}</text>`);
  const gw = pw / Math.max(1, c.groups.length);
  const ns = Math.max(1, c.series.length);
  const bw = Math.min(46, (gw * 0.8) / ns);
  c.groups.forEach((g, gi) => {
    const gx = m.left + gi * gw + (gw - bw * ns) / 2;
    c.series.forEach((s, si) => {
      const v = s.values[gi] as number;
      if (!Number.isFinite(v)) return;
      const x = gx + si * bw;
      const top = y(v);
      const base = m.top + ph;
      out.push(`<rect x="${x + 1}" y="${top}" width="${bw - 2}" height="${Math.max(0, base - top)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name} · ${g}: ${v}`)}</title></rect>`);
      out.push(`<text x="${x + bw / 2}" y="${top - 4}" text-anchor="middle" font-size="10" fill="#222">${shortNum(v)}</text>`);
    });
    const lines = g.split('\n');
    lines.forEach((line, li) => {
      out.push(`<text x="${m.left + gi * gw + gw / 2}" y="${m.top + ph + 16 + li * 14}" text-anchor="middle" fill="#222">${esc(line)}</text>`);
    });
  });
  // legend
  let lx = m.left;
  const ly = H - 14;
  c.series.forEach((s, si) => {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${COLORS[si % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 16}" y="${ly}" fill="#222">${esc(s.name)}</text>`);
    lx += 28 + s.name.length * 6.6;
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface HBarChart {
  title: string;
  subtitle?: string;
  unit: string;
  rows: Array<{ label: string; value: number; color?: number }>;
  width?: number;
}

/** Horizontal bars (e.g. a profile's top functions), labels on the left. */
export function hbarChart(c: HBarChart): string {
  const W = c.width ?? 760;
  const rowH = 20;
  const m = { top: c.subtitle ? 48 : 34, right: 70, bottom: 12, left: 330 };
  const H = m.top + m.bottom + rowH * c.rows.length;
  const max = Math.max(...c.rows.map((r) => r.value), 1e-9);
  const pw = W - m.left - m.right;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(c.title)}</text>`);
  if (c.subtitle) out.push(`<text x="${W / 2}" y="35" text-anchor="middle" fill="#555">${esc(c.subtitle)}</text>`);
  c.rows.forEach((r, i) => {
    const y0 = m.top + i * rowH;
    const w = (r.value / max) * pw;
    const label = r.label.length > 52 ? `${r.label.slice(0, 51)}…` : r.label;
    out.push(`<text x="${m.left - 6}" y="${y0 + 14}" text-anchor="end" fill="#222">${esc(label)}</text>`);
    out.push(`<rect x="${m.left}" y="${y0 + 3}" width="${Math.max(1, w)}" height="${rowH - 6}" fill="${COLORS[(r.color ?? 0) % COLORS.length]}"><title>${esc(`${r.label}: ${r.value}`)}</title></rect>`);
    out.push(`<text x="${m.left + w + 4}" y="${y0 + 14}" fill="#222">${shortNum(r.value)} ${esc(c.unit)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
