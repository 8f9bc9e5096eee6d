// The store's `_changes` follower (src/store/change-feed.ts): a connection that goes silent
// without closing is dropped after three missed heartbeats and opened again from the last
// sequence seen (a raw HTTP server plays the stalled CouchDB); a real pouchdb-server's
// heartbeats keep one connection open.

import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { eventually } from '../../src/devenv/process.ts';
import { ChangeFeed, type FeedRow } from '../../src/store/change-feed.ts';

describe('the store’s changes feed', { timeout: 60_000 }, () => {
  let couch: CouchServer;
  before(async () => {
    couch = await startCouch();
  });
  after(async () => {
    await couch?.destroy();
  });

  it('a connection that stops sending, heartbeats too, is opened again from the last sequence seen; the change after the stall is delivered', async () => {
    const requests: string[] = [];
    const sockets: Socket[] = [];
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/db') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ update_seq: '5-a' }));
        return;
      }
      requests.push(url.searchParams.get('since') ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (requests.length === 1) {
        // One change, one heartbeat, then nothing: the connection stays open and silent.
        res.write(`${JSON.stringify({ seq: '6-b', id: 'doc-1', changes: [{ rev: '1-x' }] })}\n\n`);
        return;
      }
      res.write(`${JSON.stringify({ seq: '7-c', id: 'doc-2', changes: [{ rev: '2-y' }], deleted: true })}\n`);
    });
    server.on('connection', (s) => void sockets.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const rows: FeedRow[] = [];
    const errors: Error[] = [];
    const feed = new ChangeFeed({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, db: 'db', heartbeatMs: 100, onRows: (r) => rows.push(...r), onError: (e) => errors.push(e) });
    try {
      await feed.start();
      await eventually(() => rows.length >= 2, 'the change sent on the second connection');
      assert.deepEqual(requests.slice(0, 2), ['5-a', '6-b'], 'opened again from the last sequence seen');
      assert.deepEqual(rows.slice(0, 2), [
        { id: 'doc-1', rev: '1-x', deleted: false },
        { id: 'doc-2', rev: '2-y', deleted: true },
      ]);
      assert.match(String(errors[0]?.message), /sent nothing for 300 ms \(3 heartbeats\); reconnecting/);
    } finally {
      await feed.stop();
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('pouchdb-server’s heartbeats keep one connection open: no reconnect, changes delivered as they come', async () => {
    const db = `feed-${Date.now()}`;
    const put = (id: string): Promise<Response> => fetch(`${couch.url}/${db}/${id}`, { method: 'PUT', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.ok((await fetch(`${couch.url}/${db}`, { method: 'PUT' })).ok);
    const rows: FeedRow[] = [];
    const errors: Error[] = [];
    const feed = new ChangeFeed({ url: couch.url, db, heartbeatMs: 100, onRows: (r) => rows.push(...r), onError: (e) => errors.push(e) });
    try {
      await feed.start();
      await put('one');
      await eventually(() => rows.length === 1, 'the first change');
      await new Promise((r) => setTimeout(r, 1000)); // ten heartbeats with nothing else to say
      await put('two');
      await eventually(() => rows.length === 2, 'the second change');
      assert.deepEqual(
        rows.map((r) => r.id),
        ['one', 'two'],
      );
      assert.deepEqual(errors, [], 'never taken for silent');
    } finally {
      await feed.stop();
    }
  });
});
