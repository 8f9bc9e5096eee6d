// Several Hermods on one CouchDB database (a real pouchdb-server, no XMPP): two pub/sub services
// on two stores of the same database stand for two processes. What one changes the other must
// enforce — from its changes feed for reads, at once for changes (the node's cluster-wide lock
// says when to reread) — and racing writes from both must end as if made one after the other.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { eventually } from '../../src/devenv/process.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { CouchKv, CouchStore } from '../../src/store/couchdb.ts';
import { lockKey, NodeLocks, TTL_MS } from '../../src/store/node-lock.ts';

const OWNER = 'owner@a.test/desk';
const CAROL = 'carol@a.test/x';
const DAVE = 'dave@b.test/y';

interface Member {
  store: CouchStore;
  service: PubsubService;
  events: Array<{ event: ServiceEvent; to: string[] }>;
}

const payload = (id: string): { item: { id: string; payload: string } } => ({ item: { id, payload: `<p xmlns="x">${id}</p>` } });

/** The condition a rejected call failed with ('' when it resolved). */
const conditionOf = (promise: Promise<unknown>): Promise<string> =>
  promise.then(
    () => '',
    (err: unknown) => (err instanceof PubsubError ? err.condition : `unexpected: ${String(err)}`),
  );

describe('several Hermods on one CouchDB database', { timeout: 120_000 }, () => {
  let couch: CouchServer;
  let a: Member;
  let b: Member;
  const members: Member[] = [];

  async function member(db: string): Promise<Member> {
    const store = new CouchStore({ url: couch.url, db });
    await store.open();
    const events: Member['events'] = [];
    const service = new PubsubService({
      store,
      mayCreateNodes: (bare) => bare.endsWith('@a.test'),
      notifier: (event: ServiceEvent, recipients: Recipient[]) => events.push({ event, to: recipients.map((r) => r.jid) }),
    });
    const m = { store, service, events };
    members.push(m);
    return m;
  }

  before(async () => {
    couch = await startCouch();
    a = await member('cluster');
    b = await member('cluster');
  });
  after(async () => {
    for (const m of members) {
      await m.service.close();
      await m.store.close();
    }
    await couch?.destroy();
  });

  it('the feed tells a map the keys another process wrote, not its own', async () => {
    const one = new CouchKv({ url: couch.url, db: 'feed' });
    const two = new CouchKv({ url: couch.url, db: 'feed' });
    await one.open();
    await two.open();
    try {
      const seenByOne: string[] = [];
      const seenByTwo: string[] = [];
      await one.shared.watch((keys) => seenByOne.push(...keys));
      await two.shared.watch((keys) => seenByTwo.push(...keys));
      await one.batch([{ type: 'put', key: 'n\0é node', value: '1' }]);
      await two.batch([{ type: 'put', key: 'a\0x\0y', value: 'member' }, { type: 'del', key: 'n\0é node' }]);
      await eventually(() => seenByOne.length === 2 && seenByTwo.length === 1, 'both feeds');
      assert.deepEqual(seenByOne.sort(), ['a\0x\0y', 'n\0é node']);
      assert.deepEqual(seenByTwo, ['n\0é node']);
    } finally {
      await one.close();
      await two.close();
    }
  });

  it("a node's lock whose holder died is taken over once it has expired, and the taker rereads the node", async () => {
    const kv = new CouchKv({ url: couch.url, db: 'locks' });
    await kv.open();
    try {
      let now = Date.now();
      const locks = new NodeLocks(kv.shared, () => now);
      // A process took the lock and was killed: the document stays, held.
      assert.equal(await kv.shared.putIf(lockKey('n1'), JSON.stringify({ holder: 'dead', until: now + TTL_MS }), ''), (await kv.shared.versioned(lockKey('n1'))).version);
      let ran: boolean | undefined;
      const taking = locks.run('n1', async (stale) => void (ran = stale));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(ran, undefined, 'waits while the lock is held');
      now += TTL_MS + 1;
      await taking;
      assert.equal(ran, true, 'taken over, with the node to be reread');
      // Released once this process has nothing more to do on the node.
      await eventually(async () => (JSON.parse((await kv.shared.versioned(lockKey('n1'))).value as string) as { holder?: string }).holder === undefined, 'the lock released');
      await locks.run('n1', async (stale) => void (ran = stale));
      assert.equal(ran, false, 'nobody else held it since: the cache stands');
      await locks.close();
    } finally {
      await kv.close();
    }
  });

  it("a lock handed over by a process that changed only items leaves the taker's node state standing; a state change does not", async () => {
    const kvs = [new CouchKv({ url: couch.url, db: 'tokens' }), new CouchKv({ url: couch.url, db: 'tokens' })];
    for (const kv of kvs) await kv.open();
    const [one, two] = kvs.map((kv) => new NodeLocks(kv.shared)) as [NodeLocks, NodeLocks];
    /** [stale, stateStale] of one run on the node, which changes the node's state when `touch`. */
    const flags = async (locks: NodeLocks, touch = false): Promise<[boolean, boolean]> => {
      let seen: [boolean, boolean] = [false, false];
      await locks.run('n', async (stale, stateStale) => {
        seen = [stale, stateStale];
        if (touch) locks.touch('n');
      });
      return seen;
    };
    try {
      assert.deepEqual(await flags(one), [true, true], 'never held: everything reread');
      assert.deepEqual(await flags(two), [true, true], 'never held by this process');
      assert.deepEqual(await flags(one), [true, false], 'the other only held it (published): items reread, node state stands');
      assert.deepEqual(await flags(two, true), [true, false]);
      assert.deepEqual(await flags(one), [true, true], 'the other changed the node state: reread');
      assert.deepEqual(await flags(one), [false, false], 'nobody else held it since');
    } finally {
      await one.close();
      await two.close();
      for (const kv of kvs) await kv.close();
    }
  });

  it('a lock is kept a moment after a run: the next run of its process writes no lock document, and the other process gets it after', async () => {
    const kvs = [new CouchKv({ url: couch.url, db: 'grace' }), new CouchKv({ url: couch.url, db: 'grace' })];
    for (const kv of kvs) await kv.open();
    const [kv1, kv2] = kvs as [CouchKv, CouchKv];
    const [one, two] = kvs.map((kv) => new NodeLocks(kv.shared)) as [NodeLocks, NodeLocks];
    /** The lock document as the store holds it while `locks` runs on the node: [holder, revision, stale]. */
    const during = async (locks: NodeLocks): Promise<[string | undefined, string, boolean]> => {
      let seen: [string | undefined, string, boolean] = [undefined, '', false];
      await locks.run('n', async (stale) => {
        const { value, version } = await kv1.shared.versioned(lockKey('n'));
        seen = [value === undefined ? undefined : (JSON.parse(value) as { holder?: string }).holder, version, stale];
      });
      return seen;
    };
    try {
      const first = await during(one);
      assert.equal(first[0], one.holder);
      // The next run of this process, a turn of the event loop later (not queued behind the first).
      await new Promise((resolve) => setImmediate(resolve));
      const second = await during(one);
      assert.deepEqual(second, [one.holder, first[1], false], 'the next run right after passes on: same revision, nothing written, nothing reread');
      // The other process waits for the kept lock and takes it once it is released.
      const taken = await during(two);
      assert.equal(taken[0], two.holder);
      assert.equal(taken[2], true, 'taken from another process: reread');
      await eventually(async () => (JSON.parse((await kv2.shared.versioned(lockKey('n'))).value as string) as { holder?: string }).holder === undefined, 'released after the grace');
    } finally {
      await one.close();
      await two.close();
      for (const kv of kvs) await kv.close();
    }
  });

  it('a member added through one process may read through the other; removed, it is refused again', async () => {
    await a.service.create(OWNER, 'wl', { accessModel: 'whitelist' });
    await a.service.publish(OWNER, 'wl', payload('one'));
    assert.equal(await conditionOf(b.service.getItems(CAROL, 'wl')), 'closed-node'); // b caches the node now
    await a.service.setAffiliations(OWNER, 'wl', [{ jid: CAROL, affiliation: 'member' }]);
    await eventually(async () => (await b.service.getItems(CAROL, 'wl')).length === 1, 'carol reading through b');
    await a.service.setAffiliations(OWNER, 'wl', [{ jid: CAROL, affiliation: 'none' }]);
    await eventually(async () => (await conditionOf(b.service.getItems(CAROL, 'wl'))) === 'closed-node', 'carol refused by b');
  });

  it('a change through one process is decided on what the other just changed, without waiting for the feed', async () => {
    await a.service.create(OWNER, 'now', { accessModel: 'whitelist', publishModel: 'publishers' });
    assert.equal(await conditionOf(b.service.publish(CAROL, 'now', payload('x'))), 'forbidden'); // b caches it
    await a.service.setAffiliations(OWNER, 'now', [{ jid: CAROL, affiliation: 'publisher' }]);
    assert.equal(await b.service.publish(CAROL, 'now', payload('x')), 'x');
    // A subscription made through a is notified by b's very next publish.
    await a.service.subscribe(CAROL, 'now', CAROL);
    b.events.length = 0;
    await b.service.publish(OWNER, 'now', payload('y'));
    assert.deepEqual(
      b.events.filter((e) => e.event.kind === 'items').map((e) => e.to),
      [[CAROL]],
    );
  });

  it('access-model and subscription changes through one process are seen by the other', async () => {
    await b.service.create(OWNER, 'am', { accessModel: 'whitelist' });
    assert.equal(await conditionOf(a.service.subscribe(DAVE, 'am', DAVE)), 'closed-node');
    await b.service.configure(OWNER, 'am', { accessModel: 'open' });
    await eventually(async () => (await a.service.getItems(DAVE, 'am')).length === 0, 'dave reading through a');
    await a.service.subscribe(DAVE, 'am', DAVE);
    await eventually(async () => (await b.service.getSubscriptions(OWNER, 'am')).some((s) => s.jid === DAVE), "the owner's list through b");
    await a.service.unsubscribe(DAVE, 'am', DAVE, undefined);
    await eventually(async () => (await b.service.getSubscriptions(OWNER, 'am')).length === 0, 'the unsubscription through b');
  });

  it('publishes racing from both processes keep every item, its order and the counts', async () => {
    await a.service.create(OWNER, 'race');
    const ids = Array.from({ length: 30 }, (_, i) => `i${i}`);
    // Every id published once through each process, interleaved: 30 distinct items in the end.
    await Promise.all(ids.flatMap((id) => [a.service.publish(OWNER, 'race', payload(id)), b.service.publish(OWNER, 'race', payload(id))]));
    for (const m of [a, b]) {
      const items = await m.store.getItems('race');
      assert.deepEqual(items.map((i) => i.id).sort(), [...ids].sort());
      const page = await m.store.pageItemIds('race', { max: 100 });
      assert.equal(page?.count, 30);
      assert.deepEqual(page?.entries, items.map((i) => i.id), 'order keys and items agree');
      assert.equal((await m.store.pageItemIds('race', { max: 5, index: 25 }))?.entries.length, 5, 'the counted index places the last page');
    }
  });

  it('create against create, and subscribe against subscribe, from both processes: one wins', async () => {
    const created = await Promise.all([conditionOf(a.service.create(OWNER, 'twice')), conditionOf(b.service.create(OWNER, 'twice'))]);
    assert.deepEqual(created.sort(), ['', 'conflict']);
    const [s1, s2] = await Promise.all([a.service.subscribe(DAVE, 'twice', DAVE), b.service.subscribe(DAVE, 'twice', DAVE)]);
    assert.equal(s1.subid, s2.subid, 'the second subscribe returns the first subscription');
    assert.equal((await a.store.getSubscriptions('twice')).length, 1);
  });

  it('a node deleted through one process while the other subscribes to it leaves nothing behind', async () => {
    await a.service.create(OWNER, 'gone');
    await b.service.getConfig(OWNER, 'gone'); // b caches it
    const [deleted, subscribed] = await Promise.all([conditionOf(a.service.delete(OWNER, 'gone')), conditionOf(b.service.subscribe(DAVE, 'gone', DAVE))]);
    assert.equal(deleted, '');
    assert.ok(subscribed === '' || subscribed === 'item-not-found', subscribed);
    assert.deepEqual(await a.store.getSubscriptions('gone'), [], 'no subscription outlives its node');
    // The same one after the other: b still has the node cached when the subscribe arrives.
    await a.service.create(OWNER, 'gone');
    await b.service.getConfig(OWNER, 'gone');
    await a.service.delete(OWNER, 'gone');
    assert.equal(await conditionOf(b.service.subscribe(DAVE, 'gone', DAVE)), 'item-not-found');
    assert.deepEqual(await a.store.getSubscriptions('gone'), []);
  });
});
