// Several Hermods on one CouchDB database (a real pouchdb-server) when things go wrong: a node
// lock that another process took after it expired, a database that is briefly not there, a
// store that stops while notifications are journalled, relayed stanzas whose handler fails.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { parse } from 'ltx';
import { BOUNCES, Relay, RELAY_SPACE } from '../../src/cluster/relay.ts';
import type { CouchServer } from '../../src/devenv/couchdb.ts';
import { eventually } from '../../src/devenv/process.ts';
import { NotificationJournal, JOURNAL_SPACE } from '../../src/component/journal.ts';
import { silentLogger, type Logger } from '../../src/log.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import type { NodeRecord } from '../../src/pubsub/types.ts';
import { CouchKv, CouchStore } from '../../src/store/couchdb.ts';
import { lockKey, TTL_MS } from '../../src/store/node-lock.ts';
import { couchFixture } from './couch-fixture.ts';
import { CONTACTS_SPACE, PresenceHandler, PresenceTracker } from '../../src/xmpp/presence.ts';

const event = (id: string): ServiceEvent => ({ kind: 'items', node: 'n', item: { id, payload: `<p xmlns="urn:x">${id}</p>`, publisher: 'a@x', published: 1 }, withPayload: true });
const recipients = (n: number): Recipient[] => Array.from({ length: n }, (_, i) => ({ jid: `s${i}@x`, subid: `sub${i}` }));

/** A logger that keeps its error lines. */
function errorsTo(lines: Array<{ msg: string; fields: Record<string, unknown> }>): Logger {
  const logger: Logger = { ...silentLogger, error: (msg, fields = {}) => void lines.push({ msg, fields }), child: () => logger };
  return logger;
}

const record = (id: string, title: string): NodeRecord => ({ id, creator: 'owner@a.test', created: 0, config: { title } as NodeRecord['config'] });

describe('cluster robustness on a real pouchdb-server', { timeout: 120_000 }, () => {
  let clock = Date.now();
  const fixture = couchFixture({ now: () => clock });
  const open = (db: string): Promise<CouchStore> => fixture.open(db);
  let couch: CouchServer;
  before(() => void (couch = fixture.couch));

  it('a holder whose node lock another process took after it expired writes nothing more: refused, retryable', async () => {
    const [first, second] = [await open('fence'), await open('fence')];
    const exclusive = first.exclusive;
    assert.ok(exclusive, 'a shared store has node locks');
    let refused: unknown;
    await exclusive('n', async () => {
      await first.putNode(record('n', 'first, under its lock'));
      // The first process stalls (a long GC pause, a frozen VM) past the end of its lock ...
      clock += TTL_MS + 1;
      // ... the second takes the expired lock and writes the node ...
      await second.putNode(record('n', 'second, after taking the expired lock'));
      // ... and the first, back, goes on as if it still held the lock.
      refused = await first.putNode(record('n', 'first, stale')).then(
        () => 'written',
        (err: unknown) => err,
      );
    });
    assert.ok(refused instanceof PubsubError, `the stale write is refused (got ${String(refused)})`);
    assert.equal(refused.condition, 'internal-server-error', 'wait/internal-server-error: retryable');
    assert.match(refused.message, /lock was lost .*another process took it.*nothing was written/);
    assert.equal((await second.getNode('n'))?.config.title, 'second, after taking the expired lock');
    // Asked again, the first process takes the lock anew and writes on the current state.
    await first.putNode(record('n', 'first, retried'));
    assert.equal((await second.getNode('n'))?.config.title, 'first, retried');
  });

  it('a lock kept after a run that another process took meanwhile (it expired unrenewed) is not written under: taken anew, the node reread', async () => {
    const [first, second] = [await open('kept'), await open('kept')];
    const exclusive = first.exclusive;
    assert.ok(exclusive, 'a shared store has node locks');
    await first.putNode(record('n', 'first'));
    // The first process keeps the lock after its write, then stalls past its end ...
    clock += TTL_MS + 1;
    // ... the second takes the expired lock and changes the node ...
    await second.putNode(record('n', 'second, after taking the expired lock'));
    // ... and the first, back, runs on the node again: not on its kept lock, not on its old state.
    let stale: boolean | undefined;
    await exclusive('n', async (reread) => {
      stale = reread;
      await first.putNode(record('n', 'first, on the lock taken anew'));
    });
    assert.equal(stale, true, 'the node is reread');
    assert.equal((await second.getNode('n'))?.config.title, 'first, on the lock taken anew');
  });

  it('a database briefly not there (no_db_file) is waited for: no key read as absent, no write failed', async () => {
    const kv = new CouchKv({ url: couch.url, db: 'gap' });
    await kv.open();
    try {
      await kv.batch([{ type: 'put', key: 'k', value: 'before' }]);
      // pouchdb-server answers no_db_file while a database is not in its list (right after a
      // start); a database deleted and created again gives the same answer meanwhile.
      assert.equal((await couch.request('DELETE', 'gap')).status, 200);
      const read = kv.get('k');
      const write = kv.batch([{ type: 'put', key: 'w', value: 'written' }]).then(() => 'ok', (err: unknown) => String(err));
      await new Promise((resolve) => setTimeout(resolve, 300)); // both asked while it is gone
      await couch.createDbs('gap');
      await couch.put('gap', { _id: Buffer.from('k').toString('hex'), v: 'back' });
      assert.equal(await read, 'back', 'the key was not taken for absent');
      assert.equal(await write, 'ok');
      assert.equal(await kv.get('w'), 'written');
    } finally {
      await kv.close();
    }
  });

  it("another member's barrier goes back to the server a few times before it is relayed through the store; replies are relayed at once", async () => {
    const space = (await open('bounce')).state(RELAY_SPACE);
    const sent: string[] = [];
    let online = true;
    const relay = new Relay({ log: silentLogger, pollMs: 600_000, space, tag: 'bbbbbb', deliver: () => assert.fail('nothing for b'), waiting: () => false, send: (s) => online && sent.push(s.toString()) > 0 });
    const barrier = (n: number): ReturnType<typeof parse> => parse(`<iq type="get" id="hermod-barrier-aaaaaa.${n}" from="pubsub.x" to="pubsub.x"><ping xmlns="urn:xmpp:ping"/></iq>`);
    const stored = async (): Promise<string[]> => {
      const ids: string[] = [];
      for await (const [key] of space.range('aaaaaa\0')) ids.push(key.split('\0')[1] as string);
      return ids.sort();
    };
    try {
      for (let i = 0; i < BOUNCES; i++) assert.equal(relay.route(barrier(1)), true, 'taken');
      assert.deepEqual(sent, Array(BOUNCES).fill(barrier(1).toString()), 'sent back to the server unchanged, to be balanced again');
      // Seen once more (its member gone, or the balancing brings it here every time): relayed.
      assert.equal(relay.route(barrier(1)), true);
      await eventually(async () => (await stored()).length === 1, 'stored for its member');
      // Offline: relayed at once. An IQ reply for another member: relayed at once, never bounced.
      online = false;
      assert.equal(relay.route(barrier(2)), true);
      assert.equal(relay.route(parse(`<iq type="result" id="qaaaaaa.7" from="peer.x" to="pubsub.x"/>`)), true);
      await eventually(async () => (await stored()).length === 3, 'stored for its member');
      assert.deepEqual(await stored(), ['hermod-barrier-aaaaaa.1', 'hermod-barrier-aaaaaa.2', 'qaaaaaa.7']);
      assert.equal(sent.length, BOUNCES, 'nothing more went back to the server');
    } finally {
      relay.stop();
    }
  });

  it('relayed stanzas reach their member through the changes feed, and one whose handler fails is tried again, not dropped', async () => {
    const [one, two] = [await open('relay'), await open('relay')];
    const tried: string[] = [];
    const replies: string[] = [];
    // No fallback poll within the test: only the feed can wake the receiving member.
    const common = { log: silentLogger, pollMs: 600_000 };
    const a = new Relay({ ...common, space: one.state(RELAY_SPACE), tag: 'aaaaaa', deliver: () => assert.fail('nothing for a'), waiting: () => false, isLeader: () => false });
    const b = new Relay({ ...common, space: two.state(RELAY_SPACE), tag: 'bbbbbb', deliver: (s) => void replies.push(s.attrs.id as string), waiting: () => true, isLeader: () => true });
    b.onLeaderStanza(async (s) => {
      tried.push(s.attrs.from as string);
      if (tried.length < 3) throw new Error('the store is away (this try)');
    });
    try {
      assert.equal(a.route(parse("<iq type='result' id='qbbbbbb.1' from='x@y'/>")), true);
      a.toLeader(parse("<message from='pubsub.partner'/>"));
      await eventually(() => replies.length === 1 || undefined, 'the reply taken by b', 10_000);
      assert.deepEqual(replies, ['qbbbbbb.1']);
      await eventually(() => tried.length === 3 || undefined, 'the partner event tried until its handler took it', 15_000);
      assert.deepEqual(tried, ['pubsub.partner', 'pubsub.partner', 'pubsub.partner']);
      await eventually(async () => {
        for await (const _ of two.state(RELAY_SPACE).range('')) return undefined;
        return true;
      }, 'taken stanzas deleted');
    } finally {
      a.stop();
      b.stop();
    }
  });

  it('a journal whose store stops mid-run closes within its bound and says what it did not write, truly', async () => {
    const store = await open('journal');
    const errors: Array<{ msg: string; fields: Record<string, unknown> }> = [];
    const { journal } = await NotificationJournal.open(store.state(JOURNAL_SPACE), 'm1', errorsTo(errors));
    const delivered = journal.append(event('delivered'), recipients(2));
    journal.append(event('recorded'), recipients(1));
    await journal.durable();
    await couch.stop();
    try {
      journal.confirm({ seq: delivered, index: 1 }); // its deletion cannot be written now
      journal.append(event('unrecorded'), recipients(1));
      const waiting = journal.durable().then(
        () => 'durable',
        (err: unknown) => String(err),
      );
      await journal.close(1_500); // the old journal retried for ever here
      assert.match(await waiting, /stopped before the store took its writes/, 'whoever waited hears it was not written');
      const line = errors.find((e) => /stopping without them/.test(e.msg));
      assert.ok(line, `an error line says what was not written (got ${JSON.stringify(errors.map((e) => e.msg))})`);
      assert.match(line.msg, /lost/);
      assert.match(line.msg, /sent again .* member m1/);
      assert.equal(line.fields.eventsNotRecorded, 1);
      assert.equal(line.fields.deliveredNotCleared, 1);
    } finally {
      await couch.start();
    }
    // What the line said: the delivered event comes again, the unrecorded one is gone.
    const again = await open('journal');
    const reopened = await NotificationJournal.open(again.state(JOURNAL_SPACE), 'm1', silentLogger);
    assert.deepEqual(
      reopened.undelivered.map((e) => (e.event as { item: { id: string } }).item.id),
      ['delivered', 'recorded'],
    );
    await reopened.journal.close();
  });

  it('a refusal decided again (a stale cache) takes no lock and no second rate token', async () => {
    const [one, two] = [await open('decide'), await open('decide')];
    const owner = 'owner@a.test/desk';
    const carol = 'carol@a.test/x';
    const service = (store: CouchStore): PubsubService =>
      new PubsubService({ store, now: () => 1_000, mayCreateNodes: () => true, notifier: () => {}, limits: { publishRate: { perSecond: 0.000_001, burst: 2 } } });
    // b's changes feed lags (reconnecting, say): what a changes reaches b's cache late.
    const lagging = new Proxy(two, { get: (target, p) => (p === 'watch' ? () => () => {} : Reflect.get(target, p, target)) });
    const [a, b] = [service(one), service(lagging)];
    const kv = new CouchKv({ url: couch.url, db: 'decide' });
    await kv.open();
    const lockVersion = async (node: string): Promise<string> => (await kv.shared.versioned(lockKey(node))).version;
    try {
      await a.create(owner, 'n', { publishModel: 'publishers' });
      await a.setAffiliations(owner, 'n', [{ jid: 'carol@a.test', affiliation: 'publisher' }]);
      await eventually(async () => {
        const { value } = await kv.shared.versioned(lockKey('n'));
        return (value !== undefined && (JSON.parse(value) as { holder?: string }).holder === undefined) || undefined;
      }, "a's lock released");
      await b.getConfig(owner, 'n'); // b caches the node
      // A refusal that stands: dave may not publish. Decided on b's cache, then on the stored node.
      const before = await lockVersion('n');
      const refused = await b.publish('dave@a.test/y', 'n', { item: { id: 'x', payload: '<p xmlns="x"/>' } }).then(
        () => 'published',
        (err: unknown) => (err instanceof PubsubError ? err.condition : String(err)),
      );
      assert.equal(refused, 'forbidden');
      assert.equal(await lockVersion('n'), before, 'no lock written for a request that writes nothing');
      // a makes the node notification-only (no items); b's cache still says it persists items.
      await a.configure(owner, 'n', { persistItems: false, deliverPayloads: false });
      // b's cache refuses the item-less publish (item-required), the stored node allows it: one token.
      assert.equal(await b.publish(carol, 'n', {}), undefined);
      // The burst is 2: one token is left for carol.
      assert.equal(await b.publish(carol, 'n', {}), undefined);
      const third = await b.publish(carol, 'n', {}).then(
        () => 'published',
        (err: unknown) => (err instanceof PubsubError ? err.condition : String(err)),
      );
      assert.equal(third, 'rate-limited');
    } finally {
      await a.close();
      await b.close();
      await kv.close();
    }
  });

  it("presence contacts added or removed through one process are the other's too", async () => {
    const handlers = await Promise.all(
      [await open('contacts'), await open('contacts')].map(async (store) => {
        const handler = new PresenceHandler({ jid: 'pubsub.a.test', space: store.state(CONTACTS_SPACE), dataDir: '/nonexistent', send: () => true, tracker: new PresenceTracker(), onAvailable: () => {}, log: silentLogger });
        await handler.load();
        return handler;
      }),
    );
    const [one, two] = handlers as [PresenceHandler, PresenceHandler];
    try {
      one.handle(parse("<presence type='subscribe' from='carol@a.test' to='pubsub.a.test'/>"));
      await eventually(() => two.contactList.includes('carol@a.test') || undefined, 'the other process greets carol on its next connect');
      two.handle(parse("<presence type='unsubscribe' from='carol@a.test/x' to='pubsub.a.test'/>"));
      await eventually(() => !one.contactList.includes('carol@a.test') || undefined, 'and forgets her when she leaves through it');
    } finally {
      one.close();
      two.close();
    }
  });
});
