// Runs the Store contract against every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
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
