// Per-subscription XSLT: what a stylesheet costs. Compile time (xslt3 to SEF, once per stylesheet
// content) is measured apart from run time (saxon-js in Hermod's worker, one transform after the
// other, as the sinks run them), for the two shipped stylesheets on a typical leaf: the Midgard
// article fixture (article, two parameters, an attachment with its blob) and an Ajatus note.
// No servers: the engine alone, as Hermod uses it.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildEntry, jsonCodec } from '../../src/codecs/couch-doc.ts';
import { XsltEngine } from '../../src/transform/xslt.ts';
import { REPO } from '../lib/procs.ts';
import { percentiles, type Percentiles } from '../lib/stats.ts';

export interface TransformParams {
  /** Fresh compilations per stylesheet (each by a new engine: no cache). */
  compiles: number;
  /** Transforms per stylesheet after a warm-up. */
  transforms: number;
  warmup: number;
}

export interface TransformRun {
  stylesheet: string;
  leafBytes: number;
  outputBytes: number;
  compileMs: Percentiles;
  transformMs: Percentiles;
  transformsPerSec: number;
}

export interface TransformResult {
  params: TransformParams;
  runs: TransformRun[];
}

function leaves(): Array<{ stylesheet: string; leaf: string; params: Record<string, string> }> {
  const article = readFileSync(path.join(REPO, 'test/fixtures/midgard/article-hello.xml'), 'utf8').replace(/^<\?xml[^>]*>\s*/, '');
  const midgardLeaf = `<entry xmlns="http://www.w3.org/2005/Atom"><id>urn:hermod:midgard:x</id><title>Hello</title><updated>2026-11-24T12:00:00Z</updated><content type="application/xml">${article}</content></entry>`;
  const note = {
    _id: 'note-42',
    _rev: '3-abc',
    _revisions: { start: 3, ids: ['abc', 'b', 'a'] },
    value: {
      _type: 'note',
      title: { val: 'Quarterly plan' },
      content: { val: 'A typical note of a few paragraphs. '.repeat(40) },
      tags: { val: ['plans', 'q4'] },
      metadata: { created: { val: '2026-11-20T08:00:00.000Z' }, revised: { val: '2026-11-24T13:05:09.000Z' }, deleted: { val: false } },
    },
  };
  const ajatusLeaf = buildEntry(note, { id: 'urn:n', title: 'Quarterly plan', updated: '2026-11-24T13:05:09.000Z', author: 'alice', tags: ['plans'] }, jsonCodec).toString();
  const common = { partner: 'pubsub.partner.test', publisher: 'pubsub.partner.test' };
  return [
    { stylesheet: 'midgard2ajatus.xsl', leaf: midgardLeaf, params: { ...common, node: '/midgard_article/all', 'item-id': '29a8d8f0a9823c53fba2b3f96b59e8ec', tags: 'news' } },
    { stylesheet: 'ajatus2midgard.xsl', leaf: ajatusLeaf, params: { ...common, node: '/tags/plans', 'item-id': 'note-42', 'item-guid': 'b4f3b3c8c7bd2e1b8c0f2c4c5d1e0a11', 'topic-guid': '51bd22ef3b8b066c7e72680ab6ad8845' } },
  ];
}

export async function runTransform(params: TransformParams, log: (m: string) => void): Promise<TransformResult> {
  const runs: TransformRun[] = [];
  for (const { stylesheet, leaf, params: sheetParams } of leaves()) {
    const file = path.join(REPO, 'stylesheets', stylesheet);
    const compileMs: number[] = [];
    for (let i = 0; i < params.compiles; i++) {
      const engine = new XsltEngine();
      const t0 = performance.now();
      await engine.compile(file);
      compileMs.push(performance.now() - t0);
      await engine.close();
    }
    const engine = new XsltEngine();
    try {
      const sheet = await engine.compile(file);
      let output = '';
      for (let i = 0; i < params.warmup; i++) output = await engine.transform(sheet, leaf, sheetParams);
      const transformMs: number[] = [];
      const t0 = performance.now();
      for (let i = 0; i < params.transforms; i++) {
        const t = performance.now();
        await engine.transform(sheet, leaf, sheetParams);
        transformMs.push(performance.now() - t);
      }
      const total = performance.now() - t0;
      const run: TransformRun = {
        stylesheet,
        leafBytes: Buffer.byteLength(leaf),
        outputBytes: Buffer.byteLength(output),
        compileMs: percentiles(compileMs),
        transformMs: percentiles(transformMs),
        transformsPerSec: (params.transforms / total) * 1000,
      };
      log(`transform ${stylesheet}: compile p50 ${run.compileMs.p50.toFixed(0)} ms, ${Math.round(run.transformsPerSec)} transforms/s (p50 ${run.transformMs.p50.toFixed(2)} ms, p99 ${run.transformMs.p99.toFixed(2)} ms)`);
      runs.push(run);
    } finally {
      await engine.close();
    }
  }
  return { params, runs };
}

export function transformReport(r: TransformResult): { md: string } {
  const md = [
    '## Transform (per-subscription XSLT)',
    '',
    `The shipped stylesheets on a typical leaf, through Hermod's engine (saxon-js in one worker thread, transforms one after the other). ` +
      `Compile: ${r.params.compiles} fresh xslt3 compilations to SEF (done once per stylesheet content, then cached). Run: ${r.params.transforms} transforms after ${r.params.warmup} warm-up ones.`,
    '',
    '| stylesheet | leaf | output | compile p50 | transforms/s | transform p50 | p99 |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...r.runs.map(
      (x) =>
        `| ${x.stylesheet} | ${(x.leafBytes / 1024).toFixed(1)} KiB | ${(x.outputBytes / 1024).toFixed(1)} KiB | ${x.compileMs.p50.toFixed(0)} ms | ${Math.round(x.transformsPerSec)} | ${x.transformMs.p50.toFixed(2)} ms | ${x.transformMs.p99.toFixed(2)} ms |`,
    ),
    '',
  ].join('\n');
  return { md };
}
