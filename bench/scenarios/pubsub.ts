// Reports for the scenarios that compare services: fan-out, latency and ceiling. The runs
// themselves are in lib/loadgen.ts; this turns them into tables (Markdown), plots (SVG) and
// plain statements of where Hermod stands against the targets of issue 8.

import type { FanoutResult, LatencyResult, ServerKind, ServiceKind } from '../lib/loadgen.ts';
import { fmtInt, fmtMs, fmtPct, fmtRatio, mdTable, median } from '../lib/stats.ts';
import { barChart } from '../lib/svg.ts';
import type { LoadgenResult } from './loadgen.ts';

const SERVERS: ServerKind[] = ['prosody', 'ejabberd'];
const SERVICES: ServiceKind[] = ['hermod', 'native', 'ceiling'];
const SERVER_NAME: Record<ServerKind, string> = { prosody: 'Prosody', ejabberd: 'ejabberd' };
const SERVICE_NAME: Record<ServiceKind, string> = { hermod: 'Hermod', native: 'native pub/sub', ceiling: 'ceiling' };

/** Median run (by deliveries/s) of one peer at one size, with the medians of the figures. */
export interface FanoutCell {
  runs: number;
  deliveriesPerSec: number;
  min: number;
  max: number;
  durationMs: number;
  p50: number;
  p99: number;
  iqRttP50: number;
  lost: number;
  silent: number;
  cpu: Record<string, number>;
}

export function fanoutCell(runs: FanoutResult[], server: ServerKind, service: ServiceKind, S: number): FanoutCell | undefined {
  const rs = runs.filter((r) => r.server === server && r.service === service && r.subscribers === S);
  if (rs.length === 0) return undefined;
  const cpuKeys = [...new Set(rs.flatMap((r) => Object.keys(r.cpuPct)))];
  return {
    runs: rs.length,
    deliveriesPerSec: median(rs.map((r) => r.deliveriesPerSec)),
    min: Math.min(...rs.map((r) => r.deliveriesPerSec)),
    max: Math.max(...rs.map((r) => r.deliveriesPerSec)),
    durationMs: median(rs.map((r) => r.durationMs)),
    p50: median(rs.map((r) => r.latencyMs.p50)),
    p99: median(rs.map((r) => r.latencyMs.p99)),
    iqRttP50: median(rs.map((r) => r.iqRttMs.p50)),
    lost: rs.reduce((s, r) => s + r.lost, 0),
    silent: rs.reduce((s, r) => s + r.silentReceivers, 0),
    cpu: Object.fromEntries(cpuKeys.map((k) => [k, median(rs.map((r) => r.cpuPct[k] ?? NaN))])),
  };
}

const lostText = (lost: number, silent: number, runs: number): string =>
  lost === 0 ? '0' : silent > 0 ? `${lost} (${silent} subscriber${silent > 1 ? 's' : ''} got nothing${runs > 1 ? `, over ${runs} runs` : ''})` : `${lost}`;

const cpuText = (cpu: Record<string, number>, service: ServiceKind): string =>
  [
    service !== 'native' ? `${service === 'hermod' ? 'Hermod' : 'component'} ${fmtPct(cpu.peer ?? NaN)}` : '',
    `Prosody ${fmtPct(cpu.prosody ?? NaN)}`,
    `ejabberd ${fmtPct(cpu.ejabberd ?? NaN)}`,
    `loadgen ${fmtPct(cpu.loadgen ?? NaN)}`,
    `other processes ${fmtPct(cpu.other ?? NaN)}`,
  ]
    .filter(Boolean)
    .join(', ');

export interface SubscriptionCheck {
  peer: string;
  subscribers: number;
  silent: number;
}

export function fanoutReport(
  runs: FanoutResult[],
  sizes: number[],
  params: Record<string, unknown>,
  checks: SubscriptionCheck[] = [],
): { md: string; svg: string; summary: unknown } {
  const lines: string[] = [];
  const summary: Array<Record<string, unknown>> = [];
  lines.push('## Fan-out: notifications delivered per second');
  lines.push('');
  lines.push(
    `A node with S subscribers (half on Prosody, half on ejabberd: for each service half of them are local and half over s2s), ` +
      `${sizes.map((S) => `S=${S}: ${runs.find((r) => r.subscribers === S)?.publishes ?? '?'} publishes`).join(', ')}, ` +
      `at most ${runs[0]?.window ?? '?'} publish IQs in flight. Figure = delivered notifications ÷ (first publish sent → last notification received); ` +
      `median over ${sizes.map((S) => `${Math.max(0, ...SERVERS.flatMap((sv) => SERVICES.map((svc) => fanoutCell(runs, sv, svc, S)?.runs ?? 0)))} runs at S=${S}`).join(', ')}.`,
  );
  lines.push('');
  const rows: string[][] = [];
  const statements: string[] = [];
  for (const S of sizes) {
    const natives = SERVERS.map((sv) => fanoutCell(runs, sv, 'native', S)?.deliveriesPerSec ?? NaN);
    const bestPeer = Math.max(...natives.filter(Number.isFinite));
    const bestPeerName = SERVERS[natives.indexOf(bestPeer)];
    for (const sv of SERVERS) {
      const h = fanoutCell(runs, sv, 'hermod', S);
      const n = fanoutCell(runs, sv, 'native', S);
      const c = fanoutCell(runs, sv, 'ceiling', S);
      const hv = h?.deliveriesPerSec ?? NaN;
      const toCeiling = hv / (c?.deliveriesPerSec ?? NaN);
      const toNative = hv / (n?.deliveriesPerSec ?? NaN);
      rows.push([
        `${S}`,
        SERVER_NAME[sv],
        fmtInt(hv),
        fmtInt(n?.deliveriesPerSec ?? NaN),
        fmtInt(c?.deliveriesPerSec ?? NaN),
        fmtRatio(toNative),
        fmtRatio(toCeiling),
        fmtRatio(hv / bestPeer),
      ]);
      summary.push({ subscribers: S, server: sv, hermod: hv, native: n?.deliveriesPerSec, ceiling: c?.deliveriesPerSec, hermodToNative: toNative, hermodToCeiling: toCeiling, hermodToBestPeer: hv / bestPeer, bestPeer: bestPeerName });
      if (Number.isFinite(toCeiling)) {
        const verdict = toCeiling >= 0.9 ? 'meets the ≥ 0.90× target' : `**short of the ≥ 0.90× target** (${fmtRatio(toCeiling)})`;
        statements.push(
          `- S=${S}, attached to ${SERVER_NAME[sv]}: Hermod ${fmtInt(hv)}/s = ${fmtRatio(toCeiling)} of the ceiling — ${verdict}; ` +
            `${fmtRatio(toNative)} of ${SERVER_NAME[sv]}'s own pub/sub${toNative < 1 ? ' (**slower**)' : ''}.`,
        );
      }
    }
  }
  lines.push(mdTable(['S', 'server', 'Hermod /s', 'native /s', 'ceiling /s', 'Hermod ÷ native', 'Hermod ÷ ceiling', 'Hermod ÷ best peer'], rows));
  lines.push('');
  lines.push('"best peer" is the faster of the two servers\' own pub/sub services at that S.');
  lines.push('');
  lines.push('### Against the target (≥ 90 % of the ceiling on each server)');
  lines.push('');
  lines.push(...statements);
  lines.push('');
  lines.push('### Details (medians)');
  lines.push('');
  const detail: string[][] = [];
  for (const S of sizes) {
    for (const sv of SERVERS) {
      for (const svc of SERVICES) {
        const c = fanoutCell(runs, sv, svc, S);
        if (!c) continue;
        detail.push([
          `${S}`,
          `${SERVICE_NAME[svc]} on ${SERVER_NAME[sv]}`,
          fmtInt(c.deliveriesPerSec),
          c.runs > 1 ? `${fmtInt(c.min)}–${fmtInt(c.max)}` : '',
          fmtInt(c.durationMs),
          fmtMs(c.p50),
          fmtMs(c.p99),
          fmtMs(c.iqRttP50),
          lostText(c.lost, c.silent, c.runs),
          cpuText(c.cpu, svc),
        ]);
      }
    }
  }
  lines.push(
    mdTable(['S', 'service', 'delivered /s', 'range of runs', 'to last (ms)', 'latency p50 (ms)', 'p99 (ms)', 'publish IQ p50 (ms)', 'lost (all runs)', 'CPU (% of one core)'], detail, [
      'r',
      'l',
      'r',
      'r',
      'r',
      'r',
      'r',
      'r',
      'r',
      'l',
    ]),
  );
  lines.push('');
  if (checks.length) {
    lines.push('### Check: 20 subscriptions sent at once to a fresh node');
    lines.push('');
    lines.push(
      'Not a measurement: each service gets 20 subscribe requests at the same moment for a node nobody has used yet, then 3 publishes; ' +
        'a subscriber that receives nothing had its subscription acknowledged but not in effect. (The measured runs above subscribe ' +
        'one receiver first and the rest in parallel, so that every service serves all S subscribers.)',
    );
    lines.push('');
    lines.push(mdTable(['service', 'subscriptions acknowledged', 'in effect'], checks.map((c) => [c.peer.replace('@', ' on '), `${c.subscribers}`, `${c.subscribers - c.silent}${c.silent ? ' **(lost ' + c.silent + ')**' : ''}`]), ['l', 'r', 'r']));
    lines.push('');
  }
  const groups: string[] = [];
  const series = SERVICES.map((svc) => ({ name: svc === 'ceiling' ? 'ceiling (bare component)' : SERVICE_NAME[svc], values: [] as number[] }));
  for (const S of sizes)
    for (const sv of SERVERS) {
      groups.push(`${SERVER_NAME[sv]}\nS = ${S}`);
      SERVICES.forEach((svc, i) => series[i]?.values.push(fanoutCell(runs, sv, svc, S)?.deliveriesPerSec ?? NaN));
    }
  const svg = barChart({
    title: 'Fan-out: notifications delivered per second (higher is better)',
    subtitle: `half the subscribers local, half over s2s; median of runs; ${String(params.machineShort ?? '')}`,
    yLabel: 'notifications / s',
    groups,
    series,
  });
  return { md: lines.join('\n') + '\n', svg, summary };
}

export function latencyReport(runs: LatencyResult[], rates: number[]): { md: string; svgs: Array<{ name: string; svg: string }>; summary: unknown } {
  const lines: string[] = [];
  const summary: Array<Record<string, unknown>> = [];
  const subs = runs[0]?.subscribers ?? 10;
  lines.push('## Latency at a fixed publish rate');
  lines.push('');
  lines.push(
    `${subs} subscribers (half local, half over s2s), publishes at a fixed rate (${rates.map((rate) => {
      const r = runs.find((x) => x.rate === rate);
      return `${rate}/s for ${r ? Math.round(r.publishes / r.rate) : '?'} s`;
    }).join(', ')}); ` +
      `the first ${runs[0] ? Math.round((1 - runs[0].counted / runs[0].publishes) * 100) : '?'} % of publishes are warm-up and not counted. ` +
      'Latency = publish IQ sent → notification received, over every (publish, subscriber) pair; publish IQ = round trip of the publish request.',
  );
  lines.push('');
  const rows: string[][] = [];
  const statements: string[] = [];
  const svgs: Array<{ name: string; svg: string }> = [];
  for (const rate of rates) {
    const at = runs.filter((r) => r.rate === rate);
    const groups: string[] = [];
    const series = [
      { name: 'p50', values: [] as number[] },
      { name: 'p95', values: [] as number[] },
      { name: 'p99', values: [] as number[] },
    ];
    for (const sv of SERVERS) {
      for (const svc of SERVICES) {
        const r = at.find((x) => x.server === sv && x.service === svc);
        if (!r) continue;
        rows.push([
          `${rate}/s`,
          `${SERVICE_NAME[svc]} on ${SERVER_NAME[sv]}`,
          `${Math.round(r.achievedRate)}/s`,
          fmtMs(r.latencyMs.p50),
          fmtMs(r.latencyMs.p95),
          fmtMs(r.latencyMs.p99),
          fmtMs(r.iqRttMs.p50),
          fmtMs(r.iqRttMs.p99),
          lostText(r.lost, r.silentReceivers, 1),
          cpuText(r.cpuPct, svc),
        ]);
        groups.push(`${svc === 'ceiling' ? 'ceiling' : SERVICE_NAME[svc].replace(' pub/sub', '')}\n${SERVER_NAME[sv]}`);
        series[0]?.values.push(r.latencyMs.p50);
        series[1]?.values.push(r.latencyMs.p95);
        series[2]?.values.push(r.latencyMs.p99);
      }
      const h = at.find((x) => x.server === sv && x.service === 'hermod');
      const n = at.find((x) => x.server === sv && x.service === 'native');
      if (h && n) {
        const ratio = h.latencyMs.p99 / n.latencyMs.p99;
        summary.push({ rate, server: sv, hermodP99: h.latencyMs.p99, nativeP99: n.latencyMs.p99, ratio, hermodIqP99: h.iqRttMs.p99, nativeIqP99: n.iqRttMs.p99 });
        statements.push(
          `- ${rate}/s on ${SERVER_NAME[sv]}: Hermod p99 ${fmtMs(h.latencyMs.p99)} ms vs native ${fmtMs(n.latencyMs.p99)} ms (${fmtRatio(ratio)}) — ` +
            (ratio < 1 ? 'below the native service, as targeted.' : `**above the native service: short of the target by ${fmtRatio(ratio)}**.`),
        );
      }
    }
    const nativeBest = Math.min(...at.filter((x) => x.service === 'native').map((x) => x.latencyMs.p99));
    for (const h of at.filter((x) => x.service === 'hermod')) {
      statements.push(`- ${rate}/s: Hermod on ${SERVER_NAME[h.server]} p99 ÷ best peer's p99 = ${fmtRatio(h.latencyMs.p99 / nativeBest)}.`);
    }
    svgs.push({
      name: `${rate}`,
      svg: barChart({
        title: `Publish → notification latency at ${rate} publishes/s (lower is better)`,
        subtitle: `${subs} subscribers, half local, half over s2s`,
        yLabel: 'ms',
        groups,
        series,
        log: true,
      }),
    });
  }
  lines.push(mdTable(['rate', 'service', 'achieved', 'p50 (ms)', 'p95 (ms)', 'p99 (ms)', 'publish IQ p50 (ms)', 'IQ p99 (ms)', 'lost', 'CPU (% of one core)'], rows, ['r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l']));
  lines.push('');
  lines.push('### Against the target (p99 below every peer at both rates)');
  lines.push('');
  lines.push(...statements);
  lines.push('');
  return { md: lines.join('\n') + '\n', svgs, summary };
}

export function ceilingReport(fanout: FanoutResult[], latency: LatencyResult[], loadgen: LoadgenResult | undefined, sizes: number[]): { md: string; svg: string; summary: unknown } {
  const lines: string[] = [];
  lines.push('## Ceiling: a bare XEP-0114 component, and the load generator itself');
  lines.push('');
  lines.push(
    'The ceiling component (`bench/ceiling-component.ts`, its own process) answers the same create/subscribe/publish requests with no pub/sub logic ' +
      'and pushes one Hermod-shaped event message per subscriber, written in 64 KiB chunks as fast as the socket takes them. ' +
      'It is what the component path of each server can carry; a pub/sub component can only add cost to it.',
  );
  lines.push('');
  const rows: string[][] = [];
  const summary: Record<string, unknown> = {};
  for (const S of sizes)
    for (const sv of SERVERS) {
      const c = fanoutCell(fanout, sv, 'ceiling', S);
      if (!c) continue;
      rows.push([`fan-out S=${S}`, SERVER_NAME[sv], fmtInt(c.deliveriesPerSec), fmtMs(c.p50), fmtMs(c.p99), cpuText(c.cpu, 'ceiling')]);
      summary[`fanout_${S}_${sv}`] = c.deliveriesPerSec;
    }
  for (const r of latency.filter((x) => x.service === 'ceiling')) {
    rows.push([`latency ${r.rate}/s`, SERVER_NAME[r.server], `${Math.round(r.achievedRate)} publishes/s`, fmtMs(r.latencyMs.p50), fmtMs(r.latencyMs.p99), cpuText(r.cpuPct, 'ceiling')]);
  }
  lines.push(mdTable(['run', 'server', 'delivered /s', 'latency p50 (ms)', 'p99 (ms)', 'CPU (% of one core)'], rows, ['l', 'l', 'r', 'r', 'r', 'l']));
  lines.push('');
  if (loadgen) {
    const best = Math.max(...fanout.map((r) => r.deliveriesPerSec));
    lines.push('### The load generator\'s own ceiling');
    lines.push('');
    lines.push(
      mdTable(
        ['path', 'messages /s', 'MB/s', 'headroom over the fastest service measured'],
        [
          [`parse only (from memory, ${loadgen.messageBytes}-byte notifications)`, fmtInt(loadgen.parse.perSec), loadgen.parse.mbPerSec.toFixed(0), fmtRatio(loadgen.parse.perSec / best)],
          [`loopback TCP, ${loadgen.socket.connections} connections, blaster on the other core`, fmtInt(loadgen.socket.perSec), loadgen.socket.mbPerSec.toFixed(0), fmtRatio(loadgen.socket.perSec / best)],
        ],
        ['l', 'r', 'r', 'r'],
      ),
    );
    lines.push('');
    lines.push(
      `Both go through the receivers' exact code path (stanza splitter → marker search → per-(receiver, publish) bookkeeping). ` +
        `The fastest service measured delivered ${fmtInt(best)}/s, so the load generator ran at most at ${fmtPct((best / loadgen.socket.perSec) * 100)} of what it can take in; ` +
        'its CPU share during each run is in the tables ("loadgen").',
    );
    lines.push('');
    summary.loadgen = { parsePerSec: loadgen.parse.perSec, socketPerSec: loadgen.socket.perSec, fastestServicePerSec: best };
  }
  const groups: string[] = [];
  const values: number[] = [];
  const hermod: number[] = [];
  for (const S of sizes)
    for (const sv of SERVERS) {
      const c = fanoutCell(fanout, sv, 'ceiling', S);
      if (!c) continue;
      groups.push(`${SERVER_NAME[sv]}\nS = ${S}`);
      values.push(c.deliveriesPerSec);
      hermod.push(fanoutCell(fanout, sv, 'hermod', S)?.deliveriesPerSec ?? NaN);
    }
  const series = [
    { name: 'ceiling (bare component)', values },
    { name: 'Hermod', values: hermod },
  ];
  if (loadgen) {
    groups.push('load generator\n(loopback TCP)');
    values.push(loadgen.socket.perSec);
    hermod.push(NaN);
  }
  const svg = barChart({
    title: 'Ceiling of the component path, and of the load generator',
    subtitle: 'notifications / s the receivers took in (log scale)',
    yLabel: 'notifications / s',
    groups,
    series,
    log: true,
  });
  return { md: lines.join('\n') + '\n', svg, summary };
}
