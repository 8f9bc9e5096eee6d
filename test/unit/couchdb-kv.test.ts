// The CouchDB key-value map against LevelDB's on ranges longer than one _all_docs page, with
// keys of any characters; and its errors name the database but never the URL's password.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { CouchKv, CouchStore } from '../../src/store/couchdb.ts';
import { all, type KvRange } from '../../src/store/kv.ts';
import { LevelKv } from '../../src/store/level.ts';

describe('CouchDB key-value map', { timeout: 60_000 }, () => {
  let couch: CouchServer;
  let dir: string;
  before(async () => {
    couch = await startCouch();
    dir = mkdtempSync(path.join(tmpdir(), 'hermod-kv-'));
  });
  after(async () => {
    await couch?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads ranges (both directions, every bound, limits) exactly as LevelDB does, across pages', async () => {
    const level = new LevelKv(path.join(dir, 'level'));
    const couchKv = new CouchKv({ url: couch.url, db: 'kv_ranges' });
    await level.open();
    await couchKv.open();
    const keys = Array.from({ length: 2500 }, (_, i) => `k\0${String(i).padStart(5, '0')}${['', 'é', '\uffff', '😀', ' x'][i % 5]}`);
    const ops = keys.map((key, i) => ({ type: 'put' as const, key, value: `v${i}` }));
    await level.batch(ops);
    await couchKv.batch(ops);
    await couchKv.batch([{ type: 'del', key: keys[7] as string }, { type: 'put', key: keys[8] as string, value: 'changed' }]);
    await level.batch([{ type: 'del', key: keys[7] as string }, { type: 'put', key: keys[8] as string, value: 'changed' }]);
    const ranges: KvRange[] = [
      { gt: 'k\0', lt: 'k\0\uffff' },
      { gt: 'k\0', lt: 'k\0\uffff', reverse: true },
      { gte: keys[5] as string, lte: keys[2100] as string },
      { gt: keys[5] as string, lt: keys[2100] as string, reverse: true, limit: 1500 },
      { gte: keys[5] as string, lte: keys[2100] as string, reverse: true },
      { gt: keys[1000] as string, limit: 3 },
      { lt: keys[1000] as string, reverse: true, limit: 1001 },
    ];
    for (const range of ranges) {
      assert.deepEqual(await all(couchKv.entries(range)), await all(level.entries(range)), JSON.stringify(range));
      assert.deepEqual(await all(couchKv.keys(range)), await all(level.keys(range)));
    }
    assert.deepEqual(await couchKv.getMany([keys[7] as string, keys[8] as string, 'nope']), [undefined, 'changed', undefined]);
    await level.close();
    await couchKv.close();
  });

  it('names the database in errors but never the password', async () => {
    const url = new URL(couch.url);
    url.port = '1'; // nothing listens there
    url.username = 'hermod';
    url.password = 'S3cret-Pa55';
    const store = new CouchStore({ url: url.toString(), db: 'hermod' });
    await assert.rejects(store.open(), (err: Error) => {
      assert.match(err.message, /CouchDB http:\/\/\*\*\*@127\.0\.0\.1:1\/hermod: opening the database failed/);
      assert.doesNotMatch(err.message, /S3cret/);
      return true;
    });
  });
});
