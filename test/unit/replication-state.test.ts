// Replication state lives in the store (a state space), on every backend: what replication
// remembers survives a restart on memory, LevelDB and a real pouchdb-server; the LevelDB an
// older Hermod kept beside the store (dataDir/replication, dataDir/midgard) is imported once at
// start; and `hermod migrate` (copyStore) carries the state from LevelDB to CouchDB.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClassicLevel } from 'classic-level';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { CouchKv, CouchStore } from '../../src/store/couchdb.ts';
import { KvStore } from '../../src/store/kv-store.ts';
import { LevelKv, LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { copyStore } from '../../src/store/migrate.ts';
import type { Store } from '../../src/store/store.ts';

/** Writes what a replication remembers: checkpoint, nodes, revisions, records, uploads, history positions. */
async function remember(state: ReplicationState): Promise<void> {
  await state.setCheckpoint('couchdb:notes', '12-abc');
  await state.setNodesOf('doc1', ['tag:work', 'tag:home']);
  await state.setDeletedFrom('doc2', ['tag:old']);
  await state.markRevs('doc1', ['1-a', '2-b'], 'p');
  await state.markRevs('doc1', ['2-c'], 'i');
  await state.setRecord('version', 'guid-1', { revised: '2026-01-01', n: 3 });
  await state.setRecord('version', 'guid-2', { revised: '2026-01-02', n: 4 });
  await state.setUpload('md5-x', { url: 'https://up.test/x', sha256: 'abc' });
  await state.historyPositions().set('pubsub.b.test', 'tag:work', 'h-1');
  await state.setHistoryPosition('pubsub.b.test', 'tag:home', 'h-2');
  await state.setHistoryPosition('pubsub.c.test', 'tag:work', 'h-3');
}

/** Asserts everything `remember` wrote reads back (through a state with an empty cache). */
async function assertRemembered(state: ReplicationState): Promise<void> {
  assert.equal(await state.checkpoint('couchdb:notes'), '12-abc');
  assert.equal(await state.checkpoint('couchdb:other'), undefined);
  assert.deepEqual(await state.nodesOf('doc1'), ['tag:work', 'tag:home']);
  assert.deepEqual(await state.deletedFrom('doc2'), ['tag:old']);
  assert.deepEqual([await state.revKind('doc1', '1-a'), await state.revKind('doc1', '2-c'), await state.revKind('doc1', '3-d')], ['p', 'i', undefined]);
  assert.deepEqual(await state.unknownRevs('doc1', ['1-a', '3-d', '2-c', '4-e']), ['3-d', '4-e']);
  assert.deepEqual(await state.records('version'), [
    ['guid-1', { revised: '2026-01-01', n: 3 }],
    ['guid-2', { revised: '2026-01-02', n: 4 }],
  ]);
  assert.deepEqual(await state.upload('md5-x'), { url: 'https://up.test/x', sha256: 'abc' });
  assert.equal(await state.historyPositions().get('pubsub.b.test', 'tag:work'), 'h-1');
  assert.deepEqual(await state.historyNodes('pubsub.b.test'), ['tag:home', 'tag:work']);
}

describe('replication state in the store', { timeout: 60_000 }, () => {
  let couch: CouchServer;
  let dir: string;
  before(async () => {
    couch = await startCouch();
    dir = mkdtempSync(path.join(tmpdir(), 'hermod-repstate-'));
  });
  after(async () => {
    await couch?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const backends: Array<[string, () => Store]> = [
    ['LevelDB', () => new LevelStore(path.join(dir, 'level-store'))],
    ['CouchDB (pouchdb-server)', () => new CouchStore({ url: couch.url, db: 'replication_state' })],
  ];
  for (const [name, open] of backends) {
    it(`survives a restart on the ${name} store, kept apart per replication`, async () => {
      let store = open();
      await store.open();
      const ajatus = new ReplicationState(store.state('replication'));
      await ajatus.open();
      await remember(ajatus);
      await ajatus.close();
      await store.close();
      store = open();
      await store.open();
      await assertRemembered(new ReplicationState(store.state('replication')));
      assert.equal(await new ReplicationState(store.state('midgard')).checkpoint('couchdb:notes'), undefined, "Midgard's state is its own");
      await store.close();
    });
  }

  it('works on the memory store (unit tests and the wire harness)', async () => {
    const state = new ReplicationState(new MemoryStore().state('replication'));
    await remember(state);
    await assertRemembered(state);
  });

  it("imports an older Hermod's dataDir/replication LevelDB once, logged, and keeps the directory as <dir>.imported", async () => {
    const dataDir = path.join(dir, 'old-site');
    const legacy = path.join(dataDir, 'replication');
    // The directory as the older ReplicationState wrote it: its own LevelDB with the same keys.
    const old = new ClassicLevel<string, string>(legacy, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    await old.open();
    const oldState = new ReplicationState({
      get: (k) => old.get(k),
      getMany: (keys) => old.getMany(keys),
      batch: (ops) => old.batch(ops),
      range: (prefix) => old.iterator({ gte: prefix, lt: `${prefix}\uffff` }),
      swap: () => Promise.reject(new Error('not used by ReplicationState')),
    });
    await remember(oldState);
    await old.batch(Array.from({ length: 2500 }, (_, i) => ({ type: 'put' as const, key: `rev\0bulk\0${i}-x`, value: 'p' })));
    await old.close();

    const logged: Array<{ msg: string; fields: Record<string, unknown> | undefined }> = [];
    const log = { info: (msg: string, fields?: Record<string, unknown>) => void logged.push({ msg, fields }) };
    let store = new LevelStore(path.join(dataDir, 'store'));
    await store.open();
    const state = new ReplicationState(store.state('replication'), { legacyDir: legacy, log });
    await state.open();
    assert.equal(logged.length, 1);
    assert.match(logged[0]?.msg ?? '', /imported into the store/);
    assert.equal(logged[0]?.fields?.entries, 2512);
    assert.equal(existsSync(legacy), false, 'the old directory is no longer where a start looks');
    assert.equal(existsSync(`${legacy}.imported`), true, 'nothing is deleted');
    await state.close();
    await store.close();

    store = new LevelStore(path.join(dataDir, 'store'));
    await store.open();
    const again = new ReplicationState(store.state('replication'), { legacyDir: legacy, log });
    await again.open();
    assert.equal(logged.length, 1, 'imported once');
    await assertRemembered(again);
    assert.equal(await again.revKind('bulk', '2499-x'), 'p');
    await store.close();
  });

  it('hermod migrate (copyStore) carries the replication state from LevelDB to CouchDB', async () => {
    const level = new LevelStore(path.join(dir, 'migrate-from'));
    await level.open();
    await remember(new ReplicationState(level.state('replication')));
    await new ReplicationState(level.state('midgard')).setRecord('version', 'g', { n: 1 });
    await level.close();
    const from = new LevelKv(path.join(dir, 'migrate-from'));
    const to = new CouchKv({ url: couch.url, db: 'migrate_to' });
    await from.open();
    await to.open();
    await copyStore(from, to);
    await from.close();
    await to.close();
    const couchStore = new KvStore(new CouchKv({ url: couch.url, db: 'migrate_to' }));
    await couchStore.open();
    await assertRemembered(new ReplicationState(couchStore.state('replication')));
    assert.deepEqual(await new ReplicationState(couchStore.state('midgard')).records('version'), [['g', { n: 1 }]]);
    await couchStore.close();
  });
});
