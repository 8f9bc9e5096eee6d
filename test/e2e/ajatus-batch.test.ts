// The batched Ajatus source end to end (issue 15): site A's changes are read in batches
// (`_changes?style=all_docs` + one `_bulk_get` per batch) and published pipelined; site B writes
// them. Real pouchdb-servers, Prosody (A) and ejabberd (B) over s2s, real hermod processes.
//   - one batch holding conflicting revisions and deletions of the same documents: every leaf
//     reaches B, with the same winner, the tombstones applied;
//   - one batch with attachments within and beyond the inline budget (XEP-0363);
//   - kill -9 of A in the middle of a pipelined batch: after the restart B has every document,
//     and B's database applied each revision once.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { CouchServer, HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';
type Doc = Record<string, unknown> & { _id: string; _rev?: string };

const note = (id: string, tags: string[], extra: Record<string, unknown> = {}): Doc => ({
  _id: id,
  value: { _type: 'note', title: { val: id }, tags: { val: tags }, metadata: { creator: { val: 'alice' }, revised: { val: '2026-11-30T10:00:00Z' }, deleted: { val: false } } },
  ...extra,
});

/** Every leaf revision of a document ("<rev>" or "<rev> deleted"), sorted; [] when there is none. */
async function leaves(server: CouchServer, id: string): Promise<string[]> {
  const { status, json } = await server.request('GET', `${CONTENT}/${encodeURIComponent(id)}?open_revs=all`);
  if (status !== 200) return [];
  return (json as unknown as Array<{ ok?: { _rev: string; _deleted?: boolean } }>).flatMap((r) => (r.ok ? [`${r.ok._rev}${r.ok._deleted ? ' deleted' : ''}`] : [])).sort();
}

/** The winning revision (GET without rev), or the HTTP status when there is none (404: deleted). */
async function winner(server: CouchServer, id: string): Promise<string | number> {
  const { status, json } = await server.request('GET', `${CONTENT}/${encodeURIComponent(id)}`);
  return status === 200 ? String(json._rev) : status;
}

/** Writes revisions as they are (new_edits=false), histories included. */
async function writeRevisions(server: CouchServer, docs: Doc[]): Promise<void> {
  const { status, json } = await server.request('POST', `${CONTENT}/_bulk_docs`, { docs, new_edits: false });
  assert.ok(status < 300, `_bulk_docs: ${JSON.stringify(json)}`);
}

const hash = (s: string): string => s.repeat(32).slice(0, 32);
const child = (doc: Doc, suffix: string, body: Record<string, unknown>): Doc => {
  const [n, parent] = String(doc._rev).split('-') as [string, string];
  const start = Number(n) + 1;
  return { ...body, _id: doc._id, _rev: `${start}-${hash(suffix)}`, _revisions: { start, ids: [hash(suffix), parent] } };
};

describe('batched Ajatus source: conflicts and deletions in one batch, kill -9 mid-batch', { timeout: 300_000 }, () => {
  const site = useSite({ name: 'ajbatch', couches: 2 });
  let couchA: CouchServer;
  let couchB: CouchServer;
  let alpha: ServerInfo;
  let beta: ServerInfo;
  let hermodA: HermodProcess;

  const startA = (): Promise<HermodProcess> => site.hermod({ server: alpha, name: 'site-a', extra: { appDb: { url: couchA.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } } });

  before(async () => {
    [couchA, couchB] = [site.couch(0), site.couch(1)];
    [alpha, beta] = [site.alpha, site.beta];
    await couchA.createDbs(APP, CONTENT);
    await couchB.createDbs(APP, CONTENT);
    await couchA.put(APP, { _id: 'hermod:tag:shared', access_model: 'whitelist', whitelist: [beta.componentJid] });
    await couchB.put(CONTENT, { _id: 'contact-alice', value: { _type: 'contact', title: { val: 'Alice' }, jid: { val: 'alice@alpha.test' } } });
    hermodA = await startA();
    await site.hermod({ server: beta, name: 'site-b', extra: { appDb: { url: couchB.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } } });
  });

  it('one batch with conflicting revisions and deletions of the same documents: every leaf at B, the same winner, the tombstones applied', async () => {
    for (const id of ['edge-1', 'edge-2']) await couchA.put(CONTENT, note(id, ['shared']));
    await eventually(async () => (await winner(couchB, 'edge-1')) !== 404 && (await winner(couchB, 'edge-2')) !== 404, 'edge-1 and edge-2 at B', 60_000);
    await hermodA.stop(); // what follows reaches A's feed as one batch
    const [e1, e2] = await Promise.all(['edge-1', 'edge-2'].map(async (id) => (await couchA.request('GET', `${CONTENT}/${id}`)).json as Doc));
    await writeRevisions(couchA, [
      // edge-1: two live edits and a deletion, each a child of the revision B has.
      child(e1 as Doc, 'a', note('edge-1', ['shared'], { n: 1 })),
      child(e1 as Doc, 'b', note('edge-1', ['shared'], { n: 2 })),
      child(e1 as Doc, 'c', { _deleted: true }),
      // edge-2: deleted (its tombstone is the winner).
      child(e2 as Doc, 'd', { _deleted: true }),
      // edge-3: new, with two conflicting first revisions.
      { ...note('edge-3', ['shared'], { n: 3 }), _rev: `1-${hash('e')}`, _revisions: { start: 1, ids: [hash('e')] } },
      { ...note('edge-3', ['shared'], { n: 4 }), _rev: `1-${hash('f')}`, _revisions: { start: 1, ids: [hash('f')] } },
    ]);
    await couchA.request('POST', `${CONTENT}/_bulk_docs`, { docs: Array.from({ length: 40 }, (_, i) => note(`filler-${i}`, ['shared'])) });
    hermodA = await startA();
    for (const id of ['edge-1', 'edge-2', 'edge-3']) {
      const atA = await leaves(couchA, id);
      await eventually(async () => JSON.stringify(await leaves(couchB, id)) === JSON.stringify(atA), `every leaf of ${id} at B (${atA.join(', ')})`, 60_000);
      assert.equal(await winner(couchB, id), await winner(couchA, id), `${id}: the same winner at B`);
    }
    assert.equal(await winner(couchB, 'edge-2'), 404, 'edge-2 deleted at B: its tombstone applied');
    assert.deepEqual(await leaves(couchB, 'edge-1'), [`2-${hash('a')}`, `2-${hash('b')}`, `2-${hash('c')} deleted`]);
    await eventually(async () => (await winner(couchB, 'filler-39')) !== 404, 'the rest of the batch at B', 60_000);
  });

  it('one batch whose attachments exceed the inline budget (and others within it): every document at B with the same bytes', async () => {
    await hermodA.stop();
    const bytes = (size: number, seed: number): Buffer => Buffer.from(Array.from({ length: size }, (_, i) => (i * seed) % 251));
    const small = bytes(10 * 1024, 7);
    const big = bytes(300 * 1024, 13); // above inlineAttachmentMax (128 KiB): XEP-0363
    const att = (b: Buffer): { content_type: string; data: string } => ({ content_type: 'application/octet-stream', data: b.toString('base64') });
    const docs = [
      note('att-small', ['shared'], { _attachments: { 's.bin': att(small) } }),
      note('att-big', ['shared'], { _attachments: { 'b.bin': att(big), 's.bin': att(small) } }),
      note('att-none', ['shared']),
      note('att-two', ['shared'], { _attachments: { 'a.bin': att(small), 'b.bin': att(bytes(100 * 1024, 3)) } }),
    ];
    await couchA.request('POST', `${CONTENT}/_bulk_docs`, { docs });
    hermodA = await startA();
    for (const doc of docs) {
      const atA = (await couchA.request('GET', `${CONTENT}/${doc._id}?attachments=true`)).json;
      const atB = await eventually(async () => {
        const { status, json } = await couchB.request('GET', `${CONTENT}/${doc._id}?attachments=true`);
        return status === 200 ? json : undefined;
      }, `${doc._id} at B`, 60_000);
      assert.equal(atB._rev, atA._rev, `${doc._id}: the same revision`);
      const bodies = (d: Record<string, unknown>): Record<string, string> => Object.fromEntries(Object.entries((d._attachments ?? {}) as Record<string, { data: string }>).map(([name, a]) => [name, a.data]));
      assert.deepEqual(bodies(atB), bodies(atA), `${doc._id}: the same attachment bytes`);
    }
    await hermodA.waitForLog((l) => l.msg === 'attachment uploaded' && l.doc === 'att-big', 'the large one went through XEP-0363');
  });

  it('kill -9 of A in the middle of a pipelined batch: after the restart B has every document, each revision applied once', async () => {
    const COUNT = 1500;
    await hermodA.stop();
    const ids = Array.from({ length: COUNT }, (_, i) => `kill-${String(i).padStart(4, '0')}`);
    const revs = new Map<string, string>();
    for (let i = 0; i < COUNT; i += 500) {
      const { json } = await couchA.request('POST', `${CONTENT}/_bulk_docs`, { docs: ids.slice(i, i + 500).map((id) => note(id, ['shared'])) });
      for (const row of json as unknown as Array<{ id: string; rev: string }>) revs.set(row.id, row.rev);
    }
    const seqBefore = Number((await couchB.request('GET', CONTENT)).json.update_seq);
    const publishedAtA = async (): Promise<string[]> => (await hermodA.log()).filter((l) => l.msg === 'published document' && String(l.doc).startsWith('kill-')).map((l) => String(l.doc));
    hermodA = await startA();
    await eventually(async () => (await publishedAtA()).length >= 100, 'A publishing the batch', 60_000);
    await hermodA.kill();
    const beforeKill = await publishedAtA();
    assert.ok(beforeKill.length < COUNT, `killed in the middle (${beforeKill.length} of ${COUNT} published)`);

    hermodA = await startA();
    const feedOfB = async (): Promise<Array<{ id: string; changes: Array<{ rev: string }> }>> =>
      ((await couchB.request('GET', `${CONTENT}/_changes?style=all_docs&since=${seqBefore}`)).json.results as Array<{ id: string; changes: Array<{ rev: string }> }>).filter((r) => r.id.startsWith('kill-'));
    await eventually(async () => (await feedOfB()).length === COUNT, `all ${COUNT} at B after the restart`, 120_000);
    const feed = await feedOfB();
    for (const row of feed) assert.deepEqual(row.changes.map((c) => c.rev), [revs.get(row.id)], `${row.id}: A's one revision at B`);
    assert.deepEqual(feed.map((r) => r.id).sort(), ids, 'every document, once');
    const seqAfter = Number((await couchB.request('GET', CONTENT)).json.update_seq);
    assert.equal(seqAfter - seqBefore, COUNT, "B's database applied each revision once (one update each)");
    const published = await publishedAtA();
    const times = new Map<string, number>();
    for (const id of published) times.set(id, (times.get(id) ?? 0) + 1);
    assert.ok([...times.values()].every((n) => n <= 2), 'a document published at most again after the crash (its batch was not recorded)');
  });
});
