// Runs the Store contract against every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { CouchStore } from '../../src/store/couchdb.ts';
import { LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';
import { storeContract } from './store-contract.ts';

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
});
