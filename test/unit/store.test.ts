// Runs the Store contract against every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { DEFAULT_NODE_CONFIG } from '../../src/pubsub/node-config.ts';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { CouchKv, CouchStore } from '../../src/store/couchdb.ts';
import type { BatchOp, KvRange, OrderedKv } from '../../src/store/kv.ts';
import { KvStore } from '../../src/store/kv-store.ts';
import { LevelKv, LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';
import { storeContract } from './store-contract.ts';

/** An OrderedKv whose batches start failing after a set number, as a full disk would make them; counts the calls. */
class FailingKv implements OrderedKv {
  private left = Infinity;
  /** Calls by kind: reads (get, getMany), range reads (entries, keys) and batches. */
  readonly calls = { reads: 0, ranges: 0, batches: 0 };
  constructor(private readonly inner: OrderedKv) {}
  failAfter(batches: number): void {
    this.left = batches;
  }
  open(): Promise<void> {
    return this.inner.open();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  get(key: string): Promise<string | undefined> {
    this.calls.reads++;
    return this.inner.get(key);
  }
  getMany(keys: string[]): Promise<Array<string | undefined>> {
    this.calls.reads++;
    return this.inner.getMany(keys);
  }
  async batch(ops: BatchOp[]): Promise<void> {
    this.calls.batches++;
    if (this.left <= 0) throw new Error('ENOSPC: no space left on device');
    this.left -= 1;
    await this.inner.batch(ops);
  }
  entries(range: KvRange): AsyncIterable<[string, string]> {
    this.calls.ranges++;
    return this.inner.entries(range);
  }
  keys(range: KvRange): AsyncIterable<string> {
    this.calls.ranges++;
    return this.inner.keys(range);
  }
}

describe('key-value store: what one publication costs', () => {
  it('is one batch and one read (the previous version of the item id) once the node is known', async () => {
    const kv = new FailingKv(new LevelKv(path.join(root, 'costs')));
    const store = new KvStore(kv);
    await store.open();
    await store.putNode({ id: 'n', config: { ...DEFAULT_NODE_CONFIG }, creator: 'alice@a.test', created: 1 });
    const item = (id: string) => ({ id, payload: '<p xmlns="x"/>', publisher: 'alice@a.test', published: 2 });
    await store.publishItem('n', item('first'), { keep: 10, archive: { keep: 100 } });
    for (const id of ['a', 'b', 'first']) {
      Object.assign(kv.calls, { reads: 0, ranges: 0, batches: 0 });
      await store.publishItem('n', item(id), { keep: 10, archive: { keep: 100 } });
      assert.deepEqual(kv.calls, { reads: 1, ranges: 0, batches: 1 }, `publishing ${id}`);
    }
    // At max_items the oldest is found with one range read, in the same batch.
    Object.assign(kv.calls, { reads: 0, ranges: 0, batches: 0 });
    assert.deepEqual((await store.publishItem('n', item('c'), { keep: 3, archive: { keep: 100 } })).dropped, ['a']);
    assert.deepEqual({ ...kv.calls, reads: 0 }, { reads: 0, ranges: 1, batches: 1 });
    await store.close();
  });
});

describe('LevelKv batch', () => {
  it('writes puts and deletions together, with sync on or off; a batch with an invalid operation writes none of its operations', async () => {
    for (const sync of [false, true]) {
      const kv = new LevelKv(path.join(root, `batch-${sync}`), { sync });
      await kv.open();
      await kv.batch([
        { type: 'put', key: 'a', value: '1' },
        { type: 'put', key: 'b', value: '2' },
      ]);
      await kv.batch([
        { type: 'del', key: 'a' },
        { type: 'put', key: 'c', value: '3' },
      ]);
      assert.deepEqual(await kv.getMany(['a', 'b', 'c']), [undefined, '2', '3']);
      // An operation without a value (a caller's bug) fails the whole batch: 'd' is not written, 'b' stays.
      const bad = [
        { type: 'put', key: 'd', value: '4' },
        { type: 'del', key: 'b' },
        { type: 'put', key: 'e', value: undefined },
      ] as unknown as BatchOp[];
      await assert.rejects(kv.batch(bad));
      assert.deepEqual(await kv.getMany(['b', 'd', 'e']), ['2', undefined, undefined]);
      await kv.batch([{ type: 'put', key: 'd', value: '4' }]); // the database goes on
      assert.equal(await kv.get('d'), '4');
      await kv.close();
    }
  });
});

/** A KvStore on a FailingKv over `inner`, opened. */
async function failingStore(inner: OrderedKv): Promise<{ store: Store; failAfter(batches: number): void }> {
  const kv = new FailingKv(inner);
  const store = new KvStore(kv);
  await store.open();
  return { store, failAfter: (batches) => kv.failAfter(batches) };
}

storeContract('memory', {
  async create() {
    return new MemoryStore();
  },
});

const root = mkdtempSync(path.join(tmpdir(), 'hermod-store-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const locations = new WeakMap<Store, string>();
storeContract('level', {
  async create() {
    const location = path.join(root, `db${n++}`);
    const store = new LevelStore(location);
    await store.open();
    locations.set(store, location);
    return store;
  },
  async reopen(store) {
    await store.close();
    const location = locations.get(store) as string;
    const again = new LevelStore(location);
    await again.open();
    locations.set(again, location);
    return again;
  },
  createFailing: () => failingStore(new LevelKv(path.join(root, `db${n++}`))),
});

// CouchDB backend against a real CouchDB-API server (pouchdb-server), one database per store.
let couch: Promise<CouchServer> | undefined;
after(async () => (await couch)?.destroy());
const couchDbs = new WeakMap<Store, string>();
storeContract('couchdb (pouchdb-server)', {
  async create() {
    couch ??= startCouch();
    const db = `hermod_contract_${n++}`;
    const store = new CouchStore({ url: (await couch).url, db });
    await store.open();
    couchDbs.set(store, db);
    return store;
  },
  async reopen(store) {
    await store.close();
    const db = couchDbs.get(store) as string;
    const again = new CouchStore({ url: (await couch as CouchServer).url, db });
    await again.open();
    couchDbs.set(again, db);
    return again;
  },
  async createFailing() {
    couch ??= startCouch();
    return failingStore(new CouchKv({ url: (await couch).url, db: `hermod_contract_${n++}` }));
  },
});
