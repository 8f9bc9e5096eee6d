// What start-up and `hermod check` make of CouchDB client errors (src/store/couch-answers.ts):
// which mean "nobody answers" (wait and try again) and what the message tells the user to check.
// The network case is nano's real rejection for a closed loopback port.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import nano from 'nano';
import { freePort } from '../../src/devenv/index.ts';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { couchClient } from '../../src/replication/ajatus.ts';
import { COUCH_REQUEST_TIMEOUT_MS, couchUnreachable, describeCouchFailure } from '../../src/store/couch-answers.ts';

const at = { key: 'appDb.url', dbKey: 'appDb.db' };

describe('CouchDB client errors: unreachable or refused, and what to check', () => {
  it('a CouchDB that accepts the connection and never answers: the request gives up after its timeout, as unreachable (not held for good)', async () => {
    const sockets: Socket[] = [];
    const server = createServer((socket) => void sockets.push(socket)); // reads nothing, answers nothing
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const started = Date.now();
      const err = await couchClient(`http://127.0.0.1:${port}`, 300).use('x').info().then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof Error, 'nano rejected');
      assert.equal(couchUnreachable(err), true);
      assert.ok(Date.now() - started < 10_000, 'within its timeout, not the socket\'s');
      assert.ok(COUCH_REQUEST_TIMEOUT_MS > 25_000, 'every client waits longer than a changes longpoll');
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("nano's rejection for a port nobody listens on: unreachable, naming the code and the key", async () => {
    const port = await freePort();
    const err = await nano(`http://127.0.0.1:${port}`).use('x').info().then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof Error, 'nano rejected');
    assert.equal(couchUnreachable(err), true);
    assert.equal(describeCouchFailure(err, at), 'nothing answers (ECONNREFUSED): is CouchDB running at appDb.url?');
  });

  it('HTTP answers: 5xx is unreachable (try again), 4xx is a refusal with what to check', () => {
    assert.equal(couchUnreachable({ statusCode: 503 }), true);
    assert.equal(couchUnreachable({ statusCode: 401 }), false);
    assert.equal(couchUnreachable({ statusCode: 404 }), false);
    assert.equal(couchUnreachable(new Error('something else')), false);
    assert.match(describeCouchFailure({ statusCode: 401 }, at), /refused the credentials \(HTTP 401\): check the user:password in appDb\.url/);
    assert.match(describeCouchFailure({ statusCode: 403 }, at), /HTTP 403.*appDb\.url/);
    assert.match(describeCouchFailure({ statusCode: 404 }, at), /no such database \(HTTP 404\): check appDb\.db, or create it/);
    assert.match(describeCouchFailure({ statusCode: 500, reason: 'boom' }, at), /CouchDB answered HTTP 500 \(boom\)/);
    assert.equal(couchUnreachable({ code: 'ECONNRESET' }), true);
  });

  it("nano's other connection errors: a closed socket waits, a TLS or protocol error is a wrong URL", () => {
    const nanoError = (reason: string): Error => new Error(`error happened in your connection. Reason: ${reason}`);
    assert.equal(couchUnreachable(nanoError('getaddrinfo ENOTFOUND couch.example')), true, 'DNS may come up at boot');
    assert.equal(couchUnreachable(nanoError('socket hang up')), true);
    const tls = nanoError('self-signed certificate');
    assert.equal(couchUnreachable(tls), false, 'waiting will not change a certificate');
    assert.equal(describeCouchFailure(tls, at), 'TLS or protocol error (self-signed certificate): check the scheme (http or https) and the certificate of appDb.url');
    assert.equal(couchUnreachable(nanoError('write EPROTO 00000000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number')), false);
  });
});
