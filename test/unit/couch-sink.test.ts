// The batched CouchDB sink (src/sinks/couchdb.ts) against a real pouchdb-server: documents a
// source database holds (edits, conflicts, deletions, attachments) are read the way a partner's
// publisher sends them (every leaf with its history) and handed to the sink all at once, as the
// writes of a page of history or of notifications arriving together. The target database must
// end with exactly the source's revisions, written in one `_bulk_docs` per flush, each revision
// recorded as imported before CouchDB has it (the local publisher then never echoes it), and
// only the revisions the target lacked written.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Element } from 'ltx';
import nano from 'nano';
import type { CouchDoc } from '../../src/codecs/couch-doc.ts';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { eventually } from '../../src/devenv/process.ts';
import { silentLogger } from '../../src/log.ts';
import { CouchChangesSource } from '../../src/sources/couchdb-changes.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { CouchSink, DOWNLOADS_AT_ONCE, type CouchSinkOptions } from '../../src/sinks/couchdb.ts';
import { DOWNLOAD_MAX } from '../../src/sinks/download.ts';
import { RefusedWrite } from '../../src/sinks/sink.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateOp, StateSpace } from '../../src/store/store.ts';
import { sha256 } from '../../src/util/digest.ts';
import { transformedDoc } from '../../src/replication/ajatus.ts';
import { Transforms } from '../../src/replication/transforms.ts';
import { Quarantine, QUARANTINE_SPACE } from '../../src/transform/quarantine.ts';
import { captureLog } from './capture-log.ts';


/** Every leaf of a document as a partner's publisher reads it: history and attachments inline. */
async function leavesOf(couch: CouchServer, db: string, id: string): Promise<CouchDoc[]> {
  const { json } = await couch.request('GET', `${db}/${encodeURIComponent(id)}?open_revs=all&revs=true&attachments=true`);
  return (json as unknown as Array<{ ok?: CouchDoc }>).flatMap((r) => (r.ok ? [r.ok] : []));
}

/** Per document: its leaf revisions ("rev" or "rev deleted", sorted) and its winner, as a reader sees them. */
async function shape(couch: CouchServer, db: string, id: string): Promise<{ leaves: string[]; winner: unknown }> {
  const leaves = (await leavesOf(couch, db, id)).map((d) => `${d._rev}${d._deleted ? ' deleted' : ''}`).sort();
  const { status, json } = await couch.request('GET', `${db}/${encodeURIComponent(id)}?conflicts=true&deleted_conflicts=true`);
  return { leaves, winner: status === 200 ? { rev: json._rev, conflicts: json._conflicts, deleted: json._deleted_conflicts } : status };
}

/** id -> [seq, leaf revs] from the changes feed (style=all_docs). */
async function changes(couch: CouchServer, db: string): Promise<Map<string, string>> {
  const { json } = await couch.request('GET', `${db}/_changes?style=all_docs`);
  return new Map((json.results as Array<{ id: string; seq: unknown; changes: Array<{ rev: string }> }>).map((r) => [r.id, JSON.stringify([r.seq, r.changes.map((c) => c.rev).sort()])]));
}

/** Revisions written with their history, as a replicator writes them. */
async function bulkRevs(couch: CouchServer, db: string, docs: Array<Record<string, unknown>>): Promise<void> {
  const { status, json } = await couch.request('POST', `${db}/_bulk_docs`, { new_edits: false, docs });
  assert.equal(status, 201, JSON.stringify(json));
}

/** A request the sink made, as pouchdb-server got it: "POST /db/_bulk_docs" and its body. */
type Seen = { line: string; body: string };

/**
 * A proxy in front of pouchdb-server that notes every request it passes on (what a user would
 * count in CouchDB's log) and can hold back the answers to the requests `hold` matches until
 * `release` is called (a flush kept in flight).
 */
async function countingProxy(upstream: string) {
  const seen: Seen[] = [];
  let hold: ((line: string) => boolean) | undefined;
  let release: () => void = () => undefined;
  let gate = Promise.resolve();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const line = `${req.method} ${(req.url ?? '').split('?')[0]}`;
        const body = Buffer.concat(chunks);
        seen.push({ line, body: body.toString() });
        const up = await fetch(`${upstream}${req.url}`, { method: req.method, headers: { 'content-type': 'application/json' }, ...(body.length > 0 ? { body } : {}) });
        const answer = Buffer.from(await up.arrayBuffer());
        if (hold?.(line)) await gate;
        res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/json' }).end(answer);
      })().catch(() => res.writeHead(502).end());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    /** Holds the answers to matching requests from now until release(). */
    holdAnswers(match: (line: string) => boolean): void {
      hold = match;
      gate = new Promise((resolve) => (release = resolve));
    },
    release: () => release(),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const hash = (s: string): string => createHash('md5').update(s).digest('hex');
/** A revision `n-<hash of label>` of `id` whose history is `labels` (newest first). */
const rev = (id: string, labels: string[], body: Record<string, unknown> = {}): Record<string, unknown> => ({
  ...body,
  _id: id,
  _rev: `${labels.length}-${hash(labels[0] as string)}`,
  _revisions: { start: labels.length, ids: labels.map(hash) },
});

describe('batched CouchDB sink', { timeout: 120_000 }, () => {
  let couch: CouchServer;
  let files: Server;
  let filesUrl: string;
  const blobs = new Map<string, Buffer>();
  let dbs = 0;

  before(async () => {
    couch = await startCouch();
    // Stands in for the XEP-0363 upload service of the partner's server.
    files = createServer((req, res) => {
      const body = blobs.get(req.url ?? '');
      res.writeHead(body ? 200 : 404).end(body);
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((resolve) => files.close(resolve));
    await couch.destroy();
  });

  /**
   * A fresh source and target database and a sink writing into the target, its state and its
   * log; with `proxy`, the sink talks to CouchDB through it (its requests counted).
   */
  async function setup(options: CouchSinkOptions = {}, proxy?: { url: string }) {
    const n = ++dbs;
    const [source, target] = [`source_${n}`, `target_${n}`];
    await couch.createDbs(source, target);
    const space = new MemoryStore().state('replication');
    const batches: StateOp[][] = [];
    /** Revision keys recorded when CouchDB already had the revision (too late to stop an echo). */
    const late: string[] = [];
    const watched: StateSpace = {
      get: (k) => space.get(k),
      getMany: (keys) => space.getMany(keys),
      range: (p) => space.range(p),
      swap: (k, e, n) => space.swap(k, e, n),
      batch: async (ops) => {
        batches.push(ops);
        for (const op of ops) {
          const [kind, doc, r] = op.key.split('\0');
          if (kind !== 'rev') continue;
          // CouchDB down (a test of retries): it cannot have the revision.
          const { status } = await couch.request('GET', `${target}/${encodeURIComponent(doc as string)}?rev=${r}`).catch(() => ({ status: 0 }));
          if (status === 200) late.push(`${doc} ${r}`);
        }
        return space.batch(ops);
      },
    };
    const state = new ReplicationState(watched);
    const log = captureLog();
    const sink = new CouchSink(nano(proxy?.url ?? couch.url).use(target), state, log, options);
    /** Hands every leaf of each source document to the sink at once; resolves to each write's outcome. */
    const deliver = async (ids: string[]) => Promise.allSettled(await Promise.all(ids.map(async (id) => leavesOf(couch, source, id))).then((all) => all.map((leaves) => sink.write(leaves))));
    const revBatches = () => batches.filter((b) => b.some((op) => op.key.startsWith('rev\0'))).length;
    return { source, target, sink, state, log, deliver, late, revBatches };
  }

  /** Runs `body` with a fresh setup whose sink talks to CouchDB through a counting proxy (closed after). */
  async function withProxy(body: (t: Awaited<ReturnType<typeof setup>>, proxy: Awaited<ReturnType<typeof countingProxy>>) => Promise<void>): Promise<void> {
    const proxy = await countingProxy(couch.url);
    try {
      await body(await setup({}, proxy), proxy);
    } finally {
      await proxy.close();
    }
  }

  it('a partner that already has part of a batch: only the missing revisions are written, the rest untouched', async () =>
    withProxy(async (t, proxy) => {
      const ids = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
      const docs = ids.map((id) => rev(id, [`${id}-b`, `${id}-a`], { title: id }));
      await bulkRevs(couch, t.source, docs);
      // The target has p1 (imported before: a replayed history) and p2 (written from elsewhere:
      // this site's replication does not know it) already, p3 only its first revision (imported).
      await bulkRevs(couch, t.target, [docs[0], docs[1], rev('p3', ['p3-a'], { title: 'p3' })] as Array<Record<string, unknown>>);
      await t.state.markRevs('p1', [docs[0]?._rev as string], 'i');
      await t.state.markRevs('p3', [rev('p3', ['p3-a'])._rev as string], 'i');
      const before = await changes(couch, t.target);
      const batchesBefore = t.revBatches();
      const lateBefore = t.late.length;

      const outcomes = await t.deliver(ids);
      assert.deepEqual(outcomes.map((o) => o.status), ids.map(() => 'fulfilled'));
      const after = await changes(couch, t.target);
      assert.equal(after.get('p1'), before.get('p1'), 'p1 untouched: same leaf and changes seq');
      assert.equal(after.get('p2'), before.get('p2'), 'p2 untouched (sent again, ignored by CouchDB): same leaf and changes seq');
      for (const id of ids) assert.deepEqual(await shape(couch, t.target, id), await shape(couch, t.source, id), `${id} as at the source`);
      // _revs_diff was asked about p1 only (the one revision the state knows): not sent again.
      const diffs = proxy.seen.filter((r) => r.line === `POST /${t.target}/_revs_diff`);
      assert.deepEqual(diffs.map((r) => JSON.parse(r.body) as unknown), [{ p1: [docs[0]?._rev] }]);
      const bulks = proxy.seen.filter((r) => r.line === `POST /${t.target}/_bulk_docs`);
      assert.deepEqual(bulks.map((r) => (JSON.parse(r.body) as { docs: CouchDoc[] }).docs.map((d) => d._id).sort()), [['p2', 'p3', 'p4', 'p5', 'p6']], 'one _bulk_docs, without p1');
      assert.equal(t.sink.flushes, 1, 'one _bulk_docs');
      assert.equal(t.revBatches() - batchesBefore, 1, 'one replication-state batch for the flush');
      // What was sent is recorded as imported (before CouchDB had it); what was there is not touched.
      for (const id of ['p2', 'p3', 'p4', 'p5', 'p6']) assert.equal(await t.state.revKind(id, docs[ids.indexOf(id)]?._rev as string), 'i');
      assert.deepEqual(t.late.slice(lateBefore), [`p2 ${docs[1]?._rev}`], 'p2 was in CouchDB before: the only one recorded when CouchDB had it');
    }));

  it('a lone live edit is written at once with one request (no _revs_diff: the revision is new to this site), recorded as imported first; the same revision again costs no request', async () =>
    withProxy(async (t, proxy) => {
      const v1 = rev('lone', ['lone-a'], { title: 'one' }) as unknown as CouchDoc;
      await t.sink.write([v1]);
      const v2 = rev('lone', ['lone-b', 'lone-a'], { title: 'two' }) as unknown as CouchDoc;
      await t.sink.write([v2]);
      // The same revision again (the document is in a second tag: its other node notifies too).
      await t.sink.write([v2]);
      assert.deepEqual(proxy.seen.map((r) => r.line), [`POST /${t.target}/_bulk_docs`, `POST /${t.target}/_bulk_docs`], 'one request per edit, none for the repeat');
      assert.equal((await couch.request('GET', `${t.target}/lone`)).json.title, 'two');
      assert.equal(await t.state.revKind('lone', v2._rev), 'i');
      assert.deepEqual(t.late, []);
    }));

  it('while the sink imports, the changes feed of its database reads after each write without longpolls; a local edit after it is seen by longpoll; every change handed over once, in order', async () => {
    // pouchdb-server's request log: what its operator would count.
    const requestLog = (): string => readFileSync(path.join(couch.dir, 'log.txt'), 'utf8');
    let source: CouchChangesSource | undefined;
    const t = await setup({ onWritten: () => source?.nudge() });
    const feedReads = (from: number): string[] => requestLog().slice(from).split('\n').filter((l) => l.includes(`GET /${t.target}/_changes?`));
    const handed: string[] = [];
    source = new CouchChangesSource({ db: nano(couch.url).use<unknown>(t.target), feed: 'couchdb:imports', log: silentLogger, importing: () => t.sink.wroteWithin(300) });
    const importsFrom = requestLog().length;
    await source.start(undefined, async ({ changes }) => void handed.push(...changes.map((c) => c.id)));
    try {
      // Five writes of ten documents each, one after the other (five `_bulk_docs`).
      const ids: string[] = [];
      for (let round = 0; round < 5; round++) {
        const docs = Array.from({ length: 10 }, (_, i) => rev(`imp-${round}-${i}`, [`imp-${round}-${i}-a`], { title: `${round}/${i}` }) as unknown as CouchDoc);
        ids.push(...docs.map((d) => d._id));
        await Promise.all(docs.map((d) => t.sink.write([d])));
      }
      assert.equal(t.sink.flushes, 5);
      await eventually(() => handed.length >= ids.length, 'every imported document handed over');
      assert.deepEqual(handed, ids, 'each once, in feed order');
      const longpolls = feedReads(importsFrom).filter((l) => l.includes('feed=longpoll'));
      // The one waiting when the imports began; before, each write woke one or more.
      assert.ok(longpolls.length <= 1, `longpolls while importing: ${longpolls.length}\n${longpolls.join('\n')}`);

      // Imports over: a local edit is seen by a longpoll waiting for it.
      await eventually(() => !t.sink.wroteWithin(300), 'the imports are over');
      const localFrom = requestLog().length;
      await couch.request('PUT', `${t.target}/local-edit`, { title: 'written here' });
      await eventually(() => handed.includes('local-edit'), 'the local edit handed over');
      assert.ok(feedReads(localFrom).some((l) => l.includes('feed=longpoll')), 'read by longpoll');
      assert.equal(handed.length, ids.length + 1);
    } finally {
      await source.stop();
    }
  });

  it('writes arriving while a flush is in flight go together in the next flush, each document in order', async () =>
    withProxy(async (t, proxy) => {
      const bulks = () => proxy.seen.filter((r) => r.line === `POST /${t.target}/_bulk_docs`);
      proxy.holdAnswers((line) => line.endsWith('/_bulk_docs'));
      const first = t.sink.write([rev('f1', ['f1-a'], { v: 1 }) as unknown as CouchDoc]);
      while (bulks().length === 0) await new Promise((resolve) => setImmediate(resolve));
      // The first flush is in flight (its answer held): these wait for the next one.
      const later = [
        t.sink.write([rev('f1', ['f1-b', 'f1-a'], { v: 2 }) as unknown as CouchDoc]),
        t.sink.write([rev('f2', ['f2-a'], { v: 1 }) as unknown as CouchDoc]),
        t.sink.write([rev('f3', ['f3-a'], { v: 1 }) as unknown as CouchDoc]),
      ];
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(bulks().length, 1, 'nothing else sent while the first flush is in flight');
      proxy.release();
      await Promise.all([first, ...later]);
      assert.deepEqual(bulks().map((r) => (JSON.parse(r.body) as { docs: CouchDoc[] }).docs.map((d) => `${d._id} ${d._rev.split('-')[0]}`).sort()), [['f1 1'], ['f1 2', 'f2 1', 'f3 1']]);
      assert.equal((await couch.request('GET', `${t.target}/f1`)).json.v, 2);
    }));

  it('retractions of several documents read their documents with one request and delete them', async () =>
    withProxy(async (t, proxy) => {
      const ids = ['x1', 'x2', 'x3', 'x4'];
      await Promise.all(ids.map((id) => t.sink.write([rev(id, [`${id}-a`], { title: id }) as unknown as CouchDoc])));
      const from = proxy.seen.length;
      // x4 is a local edit: kept. x5 does not exist.
      await bulkRevs(couch, t.target, [rev('x4', ['x4-local', 'x4-a'], { title: 'edited here' })]);
      const removed = await Promise.all([...ids, 'x5'].map((id) => t.sink.remove(id, async () => undefined)));
      assert.deepEqual(removed, [true, true, true, false, false]);
      const reads = proxy.seen.slice(from).filter((r) => !r.line.endsWith('/_bulk_docs') && !r.line.endsWith('/_revs_diff'));
      assert.deepEqual(reads.map((r) => r.line), [`POST /${t.target}/_all_docs`], 'one read for the five retractions');
      for (const id of ['x1', 'x2', 'x3']) assert.equal((await shape(couch, t.target, id)).winner, 404, `${id} deleted`);
      assert.equal((await couch.request('GET', `${t.target}/x4`)).json.title, 'edited here');
    }));

  it('a batch whose attachments exceed the inline budget (XEP-0363 references) together with small documents', async () => {
    const t = await setup();
    const big = Buffer.alloc(300 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) % 253;
    const sha = sha256(big);
    blobs.set('/big-1', big);
    const small = ['s1', 's2', 's3'].map((id) => rev(id, [`${id}-a`], { title: id, _attachments: { 'note.txt': { content_type: 'text/plain', data: Buffer.from(`small ${id}`).toString('base64') } } }));
    const large = ['l1', 'l2'].map((id) => rev(id, [`${id}-a`], { title: id, _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } }));
    await bulkRevs(couch, t.source, [...small, ...large]);
    // The publisher replaced the large attachments by references to their upload.
    const sent = await Promise.all(['s1', 'l1', 's2', 'l2', 's3'].map((id) => leavesOf(couch, t.source, id)));
    for (const [doc] of sent) {
      const atts = doc?._attachments as Record<string, unknown>;
      if (atts['big.bin']) atts['big.bin'] = { content_type: 'application/octet-stream', length: big.length, hermod_url: `${filesUrl}/big-1`, hermod_sha256: sha };
    }
    // l3: the target has it already, and its upload is gone: nothing is downloaded for it.
    const l3 = rev('l3', ['l3-a'], { title: 'l3', _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } });
    await bulkRevs(couch, t.target, [l3]);
    const l3ref = { ...l3, _attachments: { 'big.bin': { content_type: 'application/octet-stream', length: big.length, hermod_url: `${filesUrl}/expired`, hermod_sha256: sha } } } as unknown as CouchDoc;

    const outcomes = await Promise.allSettled([...sent.map((leaves) => t.sink.write(leaves)), t.sink.write([l3ref])]);
    assert.deepEqual(outcomes.map((o) => (o.status === 'rejected' ? String(o.reason) : o.status)), sent.map(() => 'fulfilled').concat('fulfilled'));
    for (const id of ['s1', 's2', 's3', 'l1', 'l2']) {
      const [atTarget] = await leavesOf(couch, t.target, id);
      const [atSource] = await leavesOf(couch, t.source, id);
      assert.deepEqual(atTarget, atSource, `${id}: same revision, body and attachment bytes`);
    }
    assert.equal(t.sink.flushes, 1, 'small and large documents in one _bulk_docs');
  });

  it('XEP-0363 references: at most maxReferencedBytes of them per flush (one larger goes alone), a few downloads at a time; a body longer than declared is refused unread', async () => {
    // An upload service that counts downloads under way and can misbehave.
    let now = 0;
    let most = 0;
    const sentBytes = new Map<string, number>();
    const uploads = createServer((req, res) => {
      const url = req.url ?? '';
      if (url === '/announces-more') return void res.writeHead(200, { 'content-length': '2000000' }).end(Buffer.alloc(2_000_000));
      if (url === '/sends-more') {
        // No length announced: it streams until the reader goes away.
        res.writeHead(200);
        let sent = 0;
        const more = (): void => {
          if (res.destroyed || sent > 64 * 1024 * 1024) return void res.end();
          sent += 65536;
          sentBytes.set(url, sent);
          if (res.write(Buffer.alloc(65536))) setImmediate(more);
          else res.once('drain', more);
        };
        res.on('close', () => sentBytes.set(url, sent));
        return more();
      }
      now++;
      most = Math.max(most, now);
      setTimeout(() => {
        now--;
        res.writeHead(200).end(blobs.get(url.replace(/^\/slow/, '')));
      }, 60);
    });
    await new Promise<void>((r) => uploads.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(uploads.address() as AddressInfo).port}`;
    try {
      const blob = Buffer.alloc(100 * 1024, 7);
      blobs.set('/blob-100k', blob);
      const ref = (id: string, url = `${base}/slow/blob-100k`, length = blob.length): CouchDoc =>
        rev(id, [`${id}-a`], { _attachments: { 'b.bin': { content_type: 'application/octet-stream', length, hermod_url: url, hermod_sha256: sha256(blob) } } }) as unknown as CouchDoc;

      // 250 KiB a flush: two 100 KiB references each, the documents without any alongside.
      const bounded = await setup({ maxReferencedBytes: 250 * 1024 });
      const docs = ['r1', 'r2', 'r3', 'r4', 'r5'].flatMap((id, i) => [ref(id), rev(`plain${i}`, [`p${i}-a`]) as unknown as CouchDoc]);
      const outcomes = await Promise.allSettled(docs.map((d) => bounded.sink.write([d])));
      assert.deepEqual(outcomes.map((o) => o.status), docs.map(() => 'fulfilled'));
      assert.equal(bounded.sink.flushes, 3, 'r1 r2 | r3 r4 | r5: the bytes referenced bound each flush');
      for (const d of docs) assert.equal((await couch.request('GET', `${bounded.target}/${d._id}`)).json._rev, d._rev, `${d._id} written`);
      assert.ok(Buffer.from(await (await fetch(`${couch.url}/${bounded.target}/r5/b.bin`)).arrayBuffer()).equals(blob), 'the bytes of the upload written');

      // Unbounded in bytes: twelve references in one flush, downloaded four at a time.
      most = 0;
      const wide = await setup();
      const many = Array.from({ length: 12 }, (_, i) => ref(`w${i}`));
      assert.deepEqual((await Promise.allSettled(many.map((d) => wide.sink.write([d])))).map((o) => o.status), many.map(() => 'fulfilled'));
      assert.equal(wide.sink.flushes, 1);
      assert.ok(most > 1 && most <= DOWNLOADS_AT_ONCE, `${most} downloads at a time (at most ${DOWNLOADS_AT_ONCE})`);

      // A body longer than its reference declares: refused without reading it whole.
      const liars = await setup();
      const [announced, streamed] = await Promise.allSettled([liars.sink.write([ref('announces', `${base}/announces-more`)]), liars.sink.write([ref('streams', `${base}/sends-more`)])]);
      assert.match(String((announced as PromiseRejectedResult).reason), /2000000 bytes announced, expected 102400/);
      assert.match(String((streamed as PromiseRejectedResult).reason), /more than the 102400 bytes expected/);
      assert.ok((streamed as PromiseRejectedResult).reason instanceof RefusedWrite);
      // A declared length that is no number of bytes (JSON's 1e999 is Infinity), or beyond what is held in memory: refused unasked.
      const [infinite, huge] = await Promise.allSettled([liars.sink.write([ref('infinite', `${base}/slow/blob-100k`, Number.POSITIVE_INFINITY)]), liars.sink.write([ref('huge', `${base}/slow/blob-100k`, DOWNLOAD_MAX + 1)])]);
      assert.match(String((infinite as PromiseRejectedResult).reason), /declared length Infinity is not a number of bytes/);
      assert.match(String((huge as PromiseRejectedResult).reason), /more than the 268435456 bytes an attachment may have here/);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok((sentBytes.get('/sends-more') ?? 0) < 16 * 1024 * 1024, `the endless body was given up early (${sentBytes.get('/sends-more')} bytes sent)`);
    } finally {
      uploads.closeAllConnections();
      await new Promise((r) => uploads.close(r));
    }
  });

  it('a flush with bad documents: the others are written, each bad one fails alone and is logged', async () => {
    const t = await setup();
    const good = ['g1', 'g2', 'g3', 'g4'].map((id) => rev(id, [`${id}-a`], { title: id }) as unknown as CouchDoc);
    // pouchdb-server refuses a whole _bulk_docs for one of these; a broken upload fails before.
    const badMember = rev('bad-member', ['bm-a'], { _unknown_member: 1 }) as unknown as CouchDoc;
    const badRef = rev('bad-ref', ['br-a'], { _attachments: { 'x.bin': { content_type: 'application/octet-stream', length: 3, hermod_url: `${filesUrl}/nothing-here`, hermod_sha256: sha256(Buffer.from('abc')) } } }) as unknown as CouchDoc;
    // pouchdb-server answers data that is not base64 with a 500 `badarg` for the whole request.
    const badBase64 = rev('bad-base64', ['bb-a'], { _attachments: { 'x.txt': { content_type: 'text/plain', data: 'not base64!\n' } } }) as unknown as CouchDoc;
    const all = [good[0], badMember, good[1], good[2], badRef, good[3], badBase64] as CouchDoc[];
    const outcomes = await Promise.allSettled(all.map((doc) => t.sink.write([doc])));
    assert.deepEqual(
      outcomes.map((o, i) => `${all[i]?._id} ${o.status}`),
      all.map((d) => `${d._id} ${d._id.startsWith('bad') ? 'rejected' : 'fulfilled'}`),
    );
    assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /bad-member/);
    assert.match(String((outcomes[4] as PromiseRejectedResult).reason), /HTTP 404/);
    // Refused for themselves: replication does not try them again (src/sinks/sink.ts RefusedWrite).
    for (const i of [1, 4, 6]) assert.ok((outcomes[i] as PromiseRejectedResult).reason instanceof RefusedWrite, `${all[i]?._id} is a RefusedWrite: ${String((outcomes[i] as PromiseRejectedResult).reason)}`);
    for (const doc of good) assert.equal((await couch.request('GET', `${t.target}/${doc._id}`)).json._rev, doc._rev, `${doc._id} written`);
    assert.equal((await couch.request('GET', `${t.target}/bad-member`)).status, 404);
    assert.ok(t.log.lines.some((l) => l.level === 'warn' && l.msg === 'document refused by CouchDB' && l.doc === 'bad-member'), 'the refused document is logged');
  });

  it('a _bulk_docs refused as a whole for who asks (403: _security or credentials being changed) fails the flush as one that may pass, not as refused documents', async () => {
    // A proxy that answers 403 to every _bulk_docs (as CouchDB does to a member no longer allowed).
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          if (req.method === 'POST' && (req.url ?? '').includes('/_bulk_docs')) {
            bulks++;
            res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'forbidden', reason: 'You are not allowed to access this db.' }));
            return;
          }
          const body = Buffer.concat(chunks);
          const up = await fetch(`${couch.url}${req.url}`, { method: req.method, headers: { 'content-type': 'application/json' }, ...(body.length > 0 ? { body } : {}) });
          res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/json' }).end(Buffer.from(await up.arrayBuffer()));
        })().catch(() => res.writeHead(502).end());
      });
    });
    let bulks = 0;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const t = await setup({}, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
      const docs = ['p1', 'p2', 'p3'].map((id) => rev(id, [`${id}-a`], { title: id }) as unknown as CouchDoc);
      const outcomes = await Promise.allSettled(docs.map((doc) => t.sink.write([doc])));
      assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected']);
      for (const o of outcomes) assert.ok(!((o as PromiseRejectedResult).reason instanceof RefusedWrite), `not a refusal of the document: ${String((o as PromiseRejectedResult).reason)}`);
      assert.equal(bulks, 1, 'one request: not split document by document');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('close() writes what waits for company at once and resolves once every write called is in the database', async () => {
    const t = await setup({ windowMs: 600_000 });
    const docs = ['c1', 'c2', 'c3'].map((id) => rev(id, [`${id}-a`], { title: id }));
    await bulkRevs(couch, t.source, docs);
    // The first goes at once; those arriving while it is written make the sink wait for more (its window: 10 min).
    const leaves = await Promise.all(['c1', 'c2', 'c3'].map((id) => leavesOf(couch, t.source, id)));
    const written = [t.sink.write(leaves[0] as CouchDoc[])];
    await new Promise((resolve) => setImmediate(resolve));
    written.push(t.sink.write(leaves[1] as CouchDoc[]), t.sink.write(leaves[2] as CouchDoc[]));
    await t.sink.close(); // on stop: nothing held back for the window
    // Every write called before close() is in the database once it resolves.
    for (const id of ['c1', 'c2', 'c3']) assert.equal((await couch.request('GET', `${t.target}/${id}`)).status, 200, `${id} written`);
    await Promise.all(written);
  });

  it('a flush whose CouchDB does not answer is tried again until it does: nothing lost', async () => {
    const t = await setup({ attempts: 20, retryDelayMs: 100 });
    const docs = ['n1', 'n2', 'n3'].map((id) => rev(id, [`${id}-a`], { title: id }) as unknown as CouchDoc);
    await couch.stop();
    const writes = Promise.allSettled(docs.map((doc) => t.sink.write([doc])));
    try {
      // Wait until a request has failed and is being retried, then bring CouchDB back.
      while (!t.log.lines.some((l) => l.msg.endsWith('failed; trying again'))) await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      await couch.start();
    }
    const settled = await writes;
    assert.deepEqual(settled.map((o) => o.status), ['fulfilled', 'fulfilled', 'fulfilled'], settled.map((o) => (o.status === 'rejected' ? String(o.reason) : 'ok')).join('; '));
    for (const doc of docs) assert.equal((await couch.request('GET', `${t.target}/${doc._id}`)).json._rev, doc._rev);
  });

  it('conflicting revisions and a deletion of the same document arriving together: the source winner, tombstones kept', async () => {
    const t = await setup();
    // c1: two branches, one of them deleted later — the live branch wins.
    // c2: both branches deleted — a deleted document whose tombstones are all kept.
    // c3: a conflict between two live branches — CouchDB's winner by revision id.
    const states: Array<Array<Record<string, unknown>>> = [];
    for (const id of ['c1', 'c2', 'c3']) {
      const a = rev(id, [`${id}-a`], { v: 'a' });
      const b = rev(id, [`${id}-b`, `${id}-a`], { v: 'b' });
      const c = rev(id, [`${id}-c`, `${id}-a`], { v: 'c' });
      const bDeleted = { ...rev(id, [`${id}-b-del`, `${id}-b`, `${id}-a`]), _deleted: true };
      const cDeleted = { ...rev(id, [`${id}-c-del`, `${id}-c`, `${id}-a`]), _deleted: true };
      const steps = id === 'c3' ? [[a], [b, c]] : id === 'c1' ? [[a], [b, c], [bDeleted, c]] : [[a], [b, c], [bDeleted, c], [bDeleted, cDeleted]];
      states.push(...steps);
      for (const step of steps) await bulkRevs(couch, t.source, step);
    }
    // Every state the publisher sent (each notification: the winner with the other leaves), then
    // the retractions that follow a deletion, all handed over at once.
    const done = await Promise.allSettled([
      ...states.map((docs) => t.sink.write(docs as unknown as CouchDoc[])),
      t.sink.remove('c2', async () => undefined),
      t.sink.remove('c1', async () => 'the source still offers it'),
    ]);
    assert.deepEqual(done.map((d) => d.status), done.map(() => 'fulfilled'));
    for (const id of ['c1', 'c2', 'c3']) assert.deepEqual(await shape(couch, t.target, id), await shape(couch, t.source, id), `${id}: the same leaves and winner as the source`);
    assert.equal((await shape(couch, t.target, 'c2')).winner, 404, 'c2 reads as deleted');
    assert.equal((done.at(-2) as PromiseFulfilledResult<boolean>).value, false, 'a retraction of a deleted document writes nothing');
    assert.deepEqual(t.late, []);
  });

  it('many edits of one document handed over at once go in one or two flushes, ending with the source winner', async () => {
    const t = await setup();
    const labels: string[] = [];
    const edits: CouchDoc[] = [];
    for (let i = 0; i < 50; i++) {
      labels.unshift(`e-${i}`);
      edits.push(rev('edited', [...labels], { n: i }) as unknown as CouchDoc);
    }
    await bulkRevs(couch, t.source, [edits.at(-1) as unknown as Record<string, unknown>]);
    await Promise.all(edits.map((doc) => t.sink.write([doc])));
    assert.deepEqual(await shape(couch, t.target, 'edited'), await shape(couch, t.source, 'edited'));
    assert.ok(t.sink.flushes <= 2, `${t.sink.flushes} flushes`);
  });

  it('a retraction deletes with a revision recorded as imported before CouchDB has it, after the writes called before it; a replay adds nothing', async () => {
    const t = await setup();
    const v1 = rev('r1', ['r1-a'], { title: 'one' }) as unknown as CouchDoc;
    const v2 = rev('r1', ['r1-b', 'r1-a'], { title: 'two' }) as unknown as CouchDoc;
    const [w1, w2, removed] = await Promise.all([t.sink.write([v1]), t.sink.write([v2]), t.sink.remove('r1', async () => undefined)]);
    assert.deepEqual([w1, w2, removed], [undefined, undefined, true]);
    const [tombstone] = await leavesOf(couch, t.target, 'r1');
    assert.equal(tombstone?._deleted, true);
    assert.deepEqual((tombstone?._revisions as { ids: string[] }).ids.slice(1), [hash('r1-b'), hash('r1-a')], 'the deletion follows revision 2: the retraction waited for it');
    assert.equal(await t.state.revKind('r1', tombstone?._rev as string), 'i');
    assert.deepEqual(t.late, [], 'every revision recorded before CouchDB had it: the local publisher never sees an unknown one');
    // The same notifications again (a replayed history): nothing new.
    const seq = (await changes(couch, t.target)).get('r1');
    await Promise.all([t.sink.write([v1]), t.sink.write([v2]), t.sink.remove('r1', async () => undefined)]);
    assert.equal((await changes(couch, t.target)).get('r1'), seq);
  });

  it('the XSLT stage takes a batch: outputs written through the flushes, a retraction called right after never overtakes its item\'s write', async () => {
    const t = await setup();
    const dir = mkdtempSync(path.join(tmpdir(), 'hermod-sink-xslt-'));
    const stylesheet = path.join(dir, 'note2doc.xsl');
    writeFileSync(
      stylesheet,
      `<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/note"><json xmlns="urn:xmpp:json:0"><xsl:value-of select="serialize(map{'_id': 'out-' || @id, 'title': string(title)}, map{'method': 'json'})"/></json></xsl:template>
</xsl:stylesheet>`,
    );
    const transforms = new Transforms({ dir, quarantine: new Quarantine(new MemoryStore().state(QUARANTINE_SPACE)), log: t.log, timeoutMs: 10_000, maxOutput: 100_000 });
    transforms.register({
      key: 'couchdb',
      format: 'a CouchDB document',
      accepts: (root) => root.name === 'json',
      write: async (root) => {
        const doc = transformedDoc(root);
        return { ref: doc._id, written: await t.sink.upsert(doc) };
      },
      remove: async (ref) => void (await t.sink.remove(ref, async () => undefined)),
    });
    const stage = transforms.stage('ajatus', {
      specFor: () => ({ stylesheet, params: {} }),
      native: { writeItem: () => Promise.reject(new Error('not transformed')), retract: () => Promise.reject(new Error('not transformed')) },
      state: t.state,
      onStylesheetChange: () => undefined,
    });
    try {
      const from = { service: 'pubsub.alpha.test', node: '/tags/shared', partner: 'alice@alpha.test' };
      const leaf = (id: string) => ({ ...from, item: new Element('item', { id }).cnode(new Element('note', { id }).c('title').t(`Title ${id}`).up()).up() });
      // Notifications arriving together: writes, then the retraction of one of them.
      const written = Promise.all(['n1', 'n2', 'n3'].map((id) => stage.writeItem(from.service, from.node, leaf(id).item, from.partner)));
      const retracted = stage.retract(from.service, from.node, 'n2', () => false, from.partner);
      assert.deepEqual(await written, [true, true, true]);
      await retracted;
      const [n2] = await leavesOf(couch, t.target, 'out-n2');
      assert.equal(n2?._deleted, true, 'out-n2 written, then deleted by the retraction called after it');
      // A page of a catch-up, as one batch.
      assert.deepEqual(await stage.writeItems(['n4', 'n5', 'n6', 'n1'].map(leaf)), [true, true, true, false]);
      for (const id of ['n1', 'n3', 'n4', 'n5', 'n6']) assert.equal((await couch.request('GET', `${t.target}/out-${id}`)).json.title, `Title ${id}`);
      assert.deepEqual(t.late, []);
    } finally {
      await transforms.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('transform outputs (upserts) go through the same flushes: the next revision of the local document, unchanged content writes nothing', async () => {
    const t = await setup();
    await bulkRevs(couch, t.target, [rev('u1', ['u1-b', 'u1-a'], { title: 'old' })]);
    const results = await Promise.all([t.sink.upsert({ _id: 'u1', title: 'new' }), t.sink.upsert({ _id: 'u2', title: 'fresh' }), t.sink.upsert({ _id: 'u2', title: 'fresh' })]);
    assert.deepEqual(results, [true, true, false]);
    const { json } = await couch.request('GET', `${t.target}/u1?revs=true&conflicts=true`);
    assert.equal(json.title, 'new');
    assert.equal(json._conflicts, undefined, 'a child of the local revision, not a conflict');
    assert.deepEqual((json._revisions as { start: number; ids: string[] }).ids.slice(1), [hash('u1-b'), hash('u1-a')]);
    assert.deepEqual(t.late, []);
  });
});
