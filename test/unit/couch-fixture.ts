// A real pouchdb-server for one describe block, and the CouchStores its tests open on it: started
// before the block, stores closed and the server removed after it.

import { after, before } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { CouchStore } from '../../src/store/couchdb.ts';
import type { KvStoreOptions } from '../../src/store/kv-store.ts';

export interface CouchFixture {
  /** The server (once `before` ran). */
  readonly couch: CouchServer;
  /** Opens a store on database `db` ("another process" for each call), closed after the block. */
  open(db: string): Promise<CouchStore>;
}

/** Registers the hooks in the calling describe block; `options` go to every store opened. */
export function couchFixture(options: KvStoreOptions = {}): CouchFixture {
  let server: CouchServer | undefined;
  const stores: CouchStore[] = [];
  before(async () => {
    server = await startCouch();
  });
  after(async () => {
    for (const s of stores) await s.close().catch(() => undefined);
    await server?.destroy();
  });
  const started = (): CouchServer => {
    if (!server) throw new Error('the pouchdb-server is not started yet');
    return server;
  };
  return {
    get couch(): CouchServer {
      return started();
    },
    async open(db) {
      const store = new CouchStore({ url: started().url, db, ...options });
      await store.open();
      stores.push(store);
      return store;
    },
  };
}
