// The benchmark's stand-in for CouchDB (bench/lib/couch-docs.ts startBenchCouch): pouchdb-server
// without express-pouchdb's validation part, so that HTTP writers do not pay its per-document scan
// of design documents (docs/PERFORMANCE.md, session 24). If an upgrade of pouchdb-server or
// express-pouchdb made the preload miss, the benchmark would silently measure the plugin again;
// the default server (tests, demo) must keep validation, which some tests rely on.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { startBenchCouch } from '../../bench/lib/couch-docs.ts';

const REFUSE_ALL = { _id: '_design/guard', validate_doc_update: "function () { throw({ forbidden: 'no writes here' }); }" };

/** Status of a `_bulk_docs` write of one document after a design document that refuses every write. */
async function writeUnderGuard(couch: CouchServer): Promise<{ status: number; answer: unknown }> {
  await couch.createDbs('notes');
  await couch.put('notes', REFUSE_ALL);
  const res = await couch.request('POST', 'notes/_bulk_docs', { docs: [{ _id: 'n1', title: 'a note' }] });
  return { status: res.status, answer: res.json };
}

describe('bench: pouchdb-server as the stand-in for CouchDB', () => {
  const servers: CouchServer[] = [];
  after(async () => {
    for (const s of servers) await s.destroy();
  });

  it('startBenchCouch runs without validation (a refusing validate_doc_update is not run); startCouch keeps it', async () => {
    const prev = process.env.HERMOD_BENCH_COUCH_VALIDATION;
    delete process.env.HERMOD_BENCH_COUCH_VALIDATION;
    try {
      const bench = await startBenchCouch();
      servers.push(bench);
      const plain = await startCouch();
      servers.push(plain);
      const [b, p] = await Promise.all([writeUnderGuard(bench), writeUnderGuard(plain)]);
      assert.equal(b.status, 201, JSON.stringify(b.answer));
      assert.deepEqual((b.answer as unknown as Array<{ id: string; ok?: boolean }>).map((r) => [r.id, r.ok]), [['n1', true]]);
      assert.match(JSON.stringify(p.answer), /forbidden/, 'the default server still validates');
      const stored = await bench.request('GET', 'notes/n1');
      assert.equal(stored.json.title, 'a note');
    } finally {
      if (prev === undefined) delete process.env.HERMOD_BENCH_COUCH_VALIDATION;
      else process.env.HERMOD_BENCH_COUCH_VALIDATION = prev;
    }
  });
});
