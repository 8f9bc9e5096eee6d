// Which Store a config asks for: LevelDB under dataDir/store (default) or a CouchDB database
// (store.backend "couchdb"). Both are the key-value Store over a different OrderedKv, which is
// also what `hermod migrate` copies between.

import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { HermodConfig } from '../config/config.ts';
import { ConfigError } from '../config/config.ts';
import { CouchKv, redactUrl } from './couchdb.ts';
import { KvStore, type KvStoreOptions } from './kv-store.ts';
import type { OrderedKv } from './kv.ts';
import { LevelKv } from './level.ts';

export type Backend = 'level' | 'couchdb';
export const BACKENDS: readonly Backend[] = ['level', 'couchdb'];

/** The key-value map of a backend as the config places it. */
export function backendKv(backend: Backend, config: Pick<HermodConfig, 'store' | 'dataDir'>): OrderedKv {
  if (backend === 'level') return new LevelKv(path.join(config.dataDir, 'store'), { sync: config.store.sync });
  if (config.store.backend !== 'couchdb') throw new ConfigError('store.couchdb: missing (set store.backend to "couchdb" and store.couchdb.url to use CouchDB)');
  return new CouchKv(config.store.couchdb);
}

/** Where a backend keeps its data, safe to log (no credentials). */
export function describeBackend(backend: Backend, config: Pick<HermodConfig, 'store' | 'dataDir'>): string {
  if (backend === 'level') return `LevelDB ${path.join(config.dataDir, 'store')}`;
  return config.store.backend === 'couchdb' ? `CouchDB ${redactUrl(config.store.couchdb.url)}/${config.store.couchdb.db}` : 'CouchDB (not configured)';
}

/** The configured store; `options.log` hears of the one-time upgrade of an older store at open. */
export function createStore(config: Pick<HermodConfig, 'store' | 'dataDir'>, options: KvStoreOptions = {}): KvStore {
  return new KvStore(backendKv(config.store.backend, config), options);
}

/** Bytes the configured store takes on disk (LevelDB files, or CouchDB's database file). */
export async function storeSize(config: Pick<HermodConfig, 'store' | 'dataDir'>): Promise<number | undefined> {
  if (config.store.backend === 'couchdb') {
    const { default: nano } = await import('nano');
    const info = await nano(config.store.couchdb.url).db.get(config.store.couchdb.db);
    return (info as { sizes?: { file?: number } }).sizes?.file ?? (info as { disk_size?: number }).disk_size;
  }
  const dir = path.join(config.dataDir, 'store');
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(path.join(dir, name))).size;
  return total;
}
