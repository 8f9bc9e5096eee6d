// Which partner each partner service belonged to, kept from run to run (src/replication/service-owners.ts,
// in the replication state): recorded as discovery finds services, forgotten when a partner
// leaves a service or is removed; read at start without losing what discovery recorded meanwhile.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReplicationState } from '../../src/replication/state.ts';
import { ServiceOwners } from '../../src/replication/service-owners.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { captureLog } from './capture-log.ts';

function owners(state: ReplicationState, log = captureLog()): ServiceOwners {
  return new ServiceOwners({ load: () => state.serviceOwners(), set: (service, partner) => state.setServiceOwner(service, partner) }, log);
}

describe('service owners', () => {
  it('recorded when found, kept across a restart, forgotten when the partner leaves a service or is removed', async () => {
    const store = new MemoryStore();
    const state = new ReplicationState(store.state('replication'));
    const first = owners(state);
    first.load();
    await first.found('a@a.test', ['pubsub.a.test', 'pubsub2.a.test']);
    await first.found('c@c.test', ['pubsub.c.test']);
    assert.deepEqual([...(await state.serviceOwners())].sort(), [['pubsub.a.test', 'a@a.test'], ['pubsub.c.test', 'c@c.test'], ['pubsub2.a.test', 'a@a.test']]);

    // The next run, before discovery: what the last one found.
    const next = owners(new ReplicationState(store.state('replication')));
    next.load();
    await next.found('c@c.test', ['pubsub.c.test']); // waits for the load; nothing changed
    assert.equal(next.ownerOf('pubsub2.a.test'), 'a@a.test');
    // A service that did not answer disco#info (maybe still there) is kept; one no longer listed goes.
    await next.found('a@a.test', ['pubsub.a.test'], ['pubsub2.a.test']);
    assert.equal(next.ownerOf('pubsub2.a.test'), 'a@a.test');
    // a left one of its services; c was removed.
    await next.found('a@a.test', ['pubsub.a.test']);
    await next.removed('c@c.test');
    assert.equal(next.ownerOf('pubsub2.a.test'), undefined);
    assert.equal(next.ownerOf('pubsub.c.test'), undefined);
    assert.deepEqual([...(await state.serviceOwners())], [['pubsub.a.test', 'a@a.test']]);
  });

  it('a service another partner is found on moves to it; a store that cannot be written is logged, the run goes on', async () => {
    const state = new ReplicationState(new MemoryStore().state('replication'));
    const o = owners(state);
    o.load();
    await o.found('a@a.test', ['shared.test']);
    await o.found('b@b.test', ['shared.test']);
    assert.equal(o.ownerOf('shared.test'), 'b@b.test');
    const log = captureLog();
    const failing = new ServiceOwners({ load: async () => new Map(), set: () => Promise.reject(new Error('store closed')) }, log);
    failing.load();
    await failing.found('a@a.test', ['pubsub.a.test']);
    assert.equal(failing.ownerOf('pubsub.a.test'), 'a@a.test', 'known in this run');
    assert.ok(log.lines.some((l) => l.msg === 'the partner of a service could not be recorded' && /store closed/.test(String(l.reason))));
  });

  it('historyServiceNodes lists every service and node with a position', async () => {
    const state = new ReplicationState(new MemoryStore().state('replication'));
    await state.setHistoryPosition('pubsub.a.test', '/tags/x', 'h1');
    await state.setHistoryPosition('pubsub.c.test', '/tags/y z', 'h2');
    assert.deepEqual(await state.historyServiceNodes(), [['pubsub.a.test', '/tags/x'], ['pubsub.c.test', '/tags/y z']]);
  });
});
