// Runs the Store contract against every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { CouchKv, CouchStore } from '../../src/store/couchdb.ts';
import type { BatchOp, KvRange, OrderedKv } from '../../src/store/kv.ts';
import { KvStore } from '../../src/store/kv-store.ts';
import { LevelKv, LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';
import { storeContract } from './store-contract.ts';

/** An OrderedKv whose batches start failing after a set number, as a full disk would make them. */
class FailingKv implements OrderedKv {
  private left = Infinity;
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
    return this.inner.get(key);
  }
  getMany(keys: string[]): Promise<Array<string | undefined>> {
    return this.inner.getMany(keys);
  }
  async batch(ops: BatchOp[]): Promise<void> {
    if (this.left <= 0) throw new Error('ENOSPC: no space left on device');
    this.left -= 1;
    await this.inner.batch(ops);
  }
  entries(range: KvRange): AsyncIterable<[string, string]> {
    return this.inner.entries(range);
  }
  keys(range: KvRange): AsyncIterable<string> {
    return this.inner.keys(range);
  }
}

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
