// Unit tests of the pub/sub core (pure logic, in-memory store): permissions from the capability
// table, XEP-0060 error names, and the events handed to the notifier.

import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PAGE_LIMIT, PENDING_PER_JID, PENDING_PER_NODE, PubsubService, SUBSCRIPTIONS_PER_JID } from '../../src/pubsub/service.ts';
import type { Timers } from '../../src/pubsub/expiry.ts';
import type { NodeConfig, Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';

const OWNER = 'owner@a.test/desk';
const BOB = 'bob@b.test/phone';
const CAROL = 'carol@b.test/x';
const ADMIN = 'admin@a.test/r';

let events: Array<{ event: ServiceEvent; to: string[] }>;
let service: PubsubService;

beforeEach(() => {
  events = [];
  let n = 0;
  service = new PubsubService({
    store: new MemoryStore(),
    admins: ['admin@a.test'],
    mayCreateNodes: (bare) => bare.endsWith('@a.test'),
    notifier: (event: ServiceEvent, recipients: Recipient[]) => events.push({ event, to: recipients.map((r) => r.jid) }),
    newId: () => `id${++n}`,
  });
});

async function rejects(promise: Promise<unknown>, condition: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof PubsubError, `expected PubsubError, got ${String(err)}`);
    assert.equal(err.condition, condition);
    return true;
  });
}

const payload = (s: string): { item: { id: string; payload: string } } => ({ item: { id: s, payload: `<p xmlns="x">${s}</p>` } });

describe('node creation policy', () => {
  it('lets local users and admins create, refuses others, and refuses duplicates', async () => {
    assert.equal(await service.create(OWNER, 'n'), 'n');
    assert.equal(await service.create('admin@elsewhere.test', 'x').catch((e: PubsubError) => e.condition), 'forbidden');
    assert.equal(await service.create(ADMIN, 'm'), 'm');
    await rejects(service.create(BOB, 'b'), 'forbidden');
    await rejects(service.create(OWNER, 'n'), 'conflict');
    assert.equal(await service.create(OWNER, undefined), 'id1'); // instant node
  });

  it('validates create-and-configure options', async () => {
    await rejects(service.create(OWNER, 'n', { accessModel: 'presence' as never }), 'not-acceptable');
    await service.create(OWNER, 'n', { accessModel: 'whitelist', maxItems: 2 });
    assert.equal((await service.getConfig(OWNER, 'n')).accessModel, 'whitelist');
  });
});

describe('owner changes per request', () => {
  it('at most 1 000 subscriptions or affiliations in one request (each a store write under the node lock): more is not-acceptable and changes nothing', async () => {
    await service.create(OWNER, 'w', { accessModel: 'whitelist' });
    const many = Array.from({ length: 1001 }, (_, i) => `u${i}@b.test`);
    await rejects(service.setAffiliations(OWNER, 'w', many.map((jid) => ({ jid, affiliation: 'member' as const }))), 'not-acceptable');
    await rejects(service.setSubscriptions(OWNER, 'w', many.map((jid) => ({ jid, state: 'subscribed' as const }))), 'not-acceptable');
    assert.deepEqual([...(await service.getAffiliations(OWNER, 'w')).keys()], ['owner@a.test']);
    assert.deepEqual(await service.getSubscriptions(OWNER, 'w'), []);
    await service.setAffiliations(OWNER, 'w', many.slice(0, 1000).map((jid) => ({ jid, affiliation: 'member' as const })));
    assert.equal((await service.getAffiliations(OWNER, 'w')).size, 1001, 'a thousand in one request are taken');
  });
});

describe('subscriptions and whitelist', () => {
  it('refuses a non-member on a whitelist node with closed-node, accepts a member', async () => {
    await service.create(OWNER, 'w', { accessModel: 'whitelist' });
    await rejects(service.subscribe(BOB, 'w', BOB), 'closed-node');
    await rejects(service.getItems(BOB, 'w'), 'closed-node');
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'member' }]);
    const sub = await service.subscribe(BOB, 'w', BOB);
    assert.equal(sub.state, 'subscribed');
  });

  it('refuses subscribing another JID (invalid-jid) and outcasts (forbidden)', async () => {
    await service.create(OWNER, 'o');
    await rejects(service.subscribe(BOB, 'o', CAROL), 'invalid-jid');
    await service.setAffiliations(OWNER, 'o', [{ jid: 'carol@b.test', affiliation: 'outcast' }]);
    await rejects(service.subscribe(CAROL, 'o', CAROL), 'forbidden');
    await rejects(service.subscribe(BOB, 'nope', BOB), 'item-not-found');
    await rejects(service.subscribe(BOB, undefined, BOB), 'nodeid-required');
  });

  it('subscribing twice returns the same subscription', async () => {
    await service.create(OWNER, 'o');
    const a = await service.subscribe(BOB, 'o', BOB);
    const b = await service.subscribe(BOB, 'o', BOB);
    assert.equal(a.subid, b.subid);
    assert.equal((await service.getSubscriptions(OWNER, 'o')).length, 1);
  });

  it('unsubscribe checks subscription and subid', async () => {
    await service.create(OWNER, 'o');
    await rejects(service.unsubscribe(BOB, 'o', BOB, undefined), 'not-subscribed');
    const sub = await service.subscribe(BOB, 'o', BOB);
    await rejects(service.unsubscribe(BOB, 'o', BOB, 'wrong'), 'invalid-subid');
    await rejects(service.unsubscribe(CAROL, 'o', BOB, undefined), 'forbidden');
    await service.unsubscribe(BOB, 'o', BOB, sub.subid);
    assert.deepEqual(await service.subscriptionsOf(BOB), []);
  });

  it('removing a member from a whitelist node ends its subscription at once and tells it', async () => {
    await service.create(OWNER, 'w', { accessModel: 'whitelist' });
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'member' }]);
    await service.subscribe(BOB, 'w', BOB);
    events = [];
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'none' }]);
    assert.deepEqual(await service.subscriptionsOf(BOB), []);
    assert.deepEqual(events.map((e) => [e.event.kind, e.to]), [['subscription', [BOB]], ['affiliation', ['bob@b.test']]]);
    await service.publish(OWNER, 'w', payload('after'));
    assert.equal(events.length, 2, 'no notification after removal');
  });

  it('making a subscriber an outcast on an open node ends its subscription', async () => {
    await service.create(OWNER, 'o');
    await service.subscribe(BOB, 'o', BOB);
    await service.setAffiliations(OWNER, 'o', [{ jid: 'bob@b.test', affiliation: 'outcast' }]);
    assert.deepEqual(await service.subscriptionsOf(BOB), []);
  });

  it('switching a node to whitelist drops subscribers that are not members', async () => {
    await service.create(OWNER, 'o');
    await service.setAffiliations(OWNER, 'o', [{ jid: 'carol@b.test', affiliation: 'member' }]);
    await service.subscribe(BOB, 'o', BOB);
    await service.subscribe(CAROL, 'o', CAROL);
    await service.configure(OWNER, 'o', { accessModel: 'whitelist' });
    assert.deepEqual((await service.getSubscriptions(OWNER, 'o')).map((s) => s.jid), [CAROL]);
  });

  it('keeps at least one owner', async () => {
    await service.create(OWNER, 'o');
    await rejects(service.setAffiliations(OWNER, 'o', [{ jid: 'owner@a.test', affiliation: 'none' }]), 'not-acceptable');
    await service.setAffiliations(OWNER, 'o', [
      { jid: 'owner@a.test', affiliation: 'none' },
      { jid: 'carol@b.test', affiliation: 'owner' },
    ]);
    assert.deepEqual([...(await service.getAffiliations(CAROL, 'o'))], [['carol@b.test', 'owner']]);
  });
});

describe('publish, retrieve, retract', () => {
  it('only publishers publish; notifications go to subscribers with payload', async () => {
    await service.create(OWNER, 'n');
    await service.subscribe(BOB, 'n', BOB);
    await rejects(service.publish(CAROL, 'n', payload('x')), 'forbidden');
    assert.equal(await service.publish(OWNER, 'n', payload('one')), 'one');
    const [ev] = events;
    assert.equal(ev?.event.kind, 'items');
    assert.deepEqual(ev?.to, [BOB]);
    assert.ok(ev?.event.kind === 'items' && ev.event.withPayload && ev.event.item?.payload.includes('one'));
    await service.setAffiliations(OWNER, 'n', [{ jid: 'carol@b.test', affiliation: 'publisher' }]);
    await service.publish(CAROL, 'n', payload('two'));
    assert.deepEqual((await service.getItems(BOB, 'n')).map((i) => [i.id, i.publisher]), [
      ['one', 'owner@a.test'],
      ['two', 'carol@b.test'],
    ]);
  });

  it('publish_model open and subscribers', async () => {
    await service.create(OWNER, 'open', { publishModel: 'open' });
    await service.publish(CAROL, 'open', payload('c'));
    await service.create(OWNER, 'subs', { publishModel: 'subscribers' });
    await rejects(service.publish(CAROL, 'subs', payload('c')), 'forbidden');
    await service.subscribe(CAROL, 'subs', CAROL);
    await service.publish(CAROL, 'subs', payload('c'));
  });

  it('generates ids, overwrites the same id, honours max_items', async () => {
    await service.create(OWNER, 'n', { maxItems: 2 });
    const generated = await service.publish(OWNER, 'n', { item: { payload: '<p xmlns="x"/>' } });
    assert.equal(generated, 'id1');
    await service.publish(OWNER, 'n', payload('a'));
    await service.publish(OWNER, 'n', payload('a'));
    await service.publish(OWNER, 'n', payload('b'));
    assert.deepEqual((await service.getItems(OWNER, 'n')).map((i) => i.id), ['a', 'b']);
    assert.deepEqual((await service.getItems(OWNER, 'n', { max: 1 })).map((i) => i.id), ['b']);
  });

  it('checks item and payload presence against the node type', async () => {
    await service.create(OWNER, 'n');
    await rejects(service.publish(OWNER, 'n', {}), 'item-required');
    await rejects(service.publish(OWNER, 'n', { item: { id: 'x' } }), 'payload-required');
    await service.create(OWNER, 't', { persistItems: false, deliverPayloads: false });
    await rejects(service.publish(OWNER, 't', payload('x')), 'item-forbidden');
    await service.subscribe(BOB, 't', BOB);
    await service.publish(OWNER, 't', {});
    assert.equal(events.at(-1)?.event.kind, 'items');
    await rejects(service.getItems(OWNER, 't'), 'persistent-items-unsupported');
  });

  it('deliver_payloads off sends notifications without payload', async () => {
    await service.create(OWNER, 'n', { deliverPayloads: false });
    await service.subscribe(BOB, 'n', BOB);
    await service.publish(OWNER, 'n', payload('a'));
    const ev = events.at(-1)?.event;
    assert.ok(ev?.kind === 'items' && !ev.withPayload);
  });

  it('retract: own items for publish-only, any for publishers; notify follows attribute then config', async () => {
    await service.create(OWNER, 'n', { notifyRetract: false });
    await service.subscribe(BOB, 'n', BOB);
    await service.setAffiliations(OWNER, 'n', [{ jid: 'carol@b.test', affiliation: 'publish-only' }]);
    await service.publish(OWNER, 'n', payload('o'));
    await service.publish(CAROL, 'n', payload('c'));
    await rejects(service.getItems(CAROL, 'n'), 'forbidden');
    await rejects(service.retract(CAROL, 'n', ['o'], undefined), 'forbidden');
    await rejects(service.retract(OWNER, 'n', ['missing'], undefined), 'item-not-found');
    await rejects(service.retract(OWNER, 'n', [], undefined), 'item-required');
    events = [];
    await service.retract(CAROL, 'n', ['c'], undefined);
    assert.equal(events.length, 0, 'notify_retract off and no notify attribute: silent');
    await service.retract(OWNER, 'n', ['o'], true);
    assert.deepEqual(events.map((e) => ({ ...e.event, archiveId: undefined })), [{ kind: 'retract', node: 'n', itemIds: ['o'], messageType: 'headline', archiveId: undefined }]);
    assert.deepEqual(await service.getItems(OWNER, 'n'), []);
  });

  it('a subscriber demoted to publish-only stops receiving notifications', async () => {
    await service.create(OWNER, 'w', { accessModel: 'whitelist' });
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'member' }]);
    await service.subscribe(BOB, 'w', BOB);
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'publish-only' }]);
    events = [];
    await service.publish(OWNER, 'w', payload('x'));
    assert.deepEqual(events, [], 'publish-only may not receive notifications');
  });
});

describe('owner operations', () => {
  it('purge and delete notify subscribers and need ownership', async () => {
    await service.create(OWNER, 'n');
    await service.subscribe(BOB, 'n', BOB);
    await service.publish(OWNER, 'n', payload('a'));
    await rejects(service.purge(BOB, 'n'), 'forbidden');
    events = [];
    await service.purge(OWNER, 'n');
    assert.deepEqual(events.map((e) => [e.event.kind, e.to]), [['purge', [BOB]]]);
    assert.deepEqual(await service.getItems(BOB, 'n'), []);
    await rejects(service.delete(BOB, 'n'), 'forbidden');
    await service.delete(OWNER, 'n');
    assert.deepEqual(events.map((e) => e.event.kind), ['purge', 'delete']);
    await rejects(service.getItems(OWNER, 'n'), 'item-not-found');
    assert.deepEqual(await service.subscriptionsOf(BOB), []);
  });

  it('admins have owner rights everywhere', async () => {
    await service.create(OWNER, 'n');
    await service.configure(ADMIN, 'n', { title: 'by admin' });
    assert.equal((await service.getConfig(ADMIN, 'n')).title, 'by admin');
  });

  it('lowering max_items trims stored items', async () => {
    await service.create(OWNER, 'n');
    for (const id of ['a', 'b', 'c']) await service.publish(OWNER, 'n', payload(id));
    await service.configure(OWNER, 'n', { maxItems: 1 });
    assert.deepEqual((await service.getItems(OWNER, 'n')).map((i) => i.id), ['c']);
  });

  it('an entity whose affiliation an owner changes is told (§8.9.4), once, and only when it changed', async () => {
    await service.create(OWNER, 'w', { accessModel: 'whitelist' });
    events = [];
    await service.setAffiliations(OWNER, 'w', [{ jid: BOB, affiliation: 'member' }]);
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'member' }]); // unchanged
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'none' }]);
    const told = events.map((e) => (e.event.kind === 'affiliation' ? [e.event.node, e.event.jid, e.event.affiliation, e.to] : e.event.kind));
    assert.deepEqual(told, [
      ['w', 'bob@b.test', 'member', ['bob@b.test']],
      ['w', 'bob@b.test', 'none', ['bob@b.test']],
    ]);
  });

  it('owner-managed subscriptions: add, remove, refuse a non-member on a whitelist', async () => {
    await service.create(OWNER, 'w', { accessModel: 'whitelist' });
    await rejects(service.setSubscriptions(OWNER, 'w', [{ jid: BOB, state: 'subscribed' }]), 'not-acceptable');
    await service.setAffiliations(OWNER, 'w', [{ jid: 'bob@b.test', affiliation: 'member' }]);
    await service.setSubscriptions(OWNER, 'w', [{ jid: BOB, state: 'subscribed' }]);
    assert.equal((await service.subscriptionsOf(BOB))[0]?.state, 'subscribed');
    await service.setSubscriptions(OWNER, 'w', [{ jid: BOB, state: 'none' }]);
    assert.deepEqual(await service.subscriptionsOf(BOB), []);
  });
});

describe('paging (RSM)', () => {
  it('pages items in publication order, caps a page, and needs the right to retrieve', async () => {
    await service.create(OWNER, 'n');
    for (let i = 0; i < PAGE_LIMIT + 5; i++) await service.publish(OWNER, 'n', payload(`i${i}`));
    const first = await service.pageItems(BOB, 'n', { max: PAGE_LIMIT * 10 });
    assert.equal(first.entries.length, PAGE_LIMIT, 'a page is capped');
    assert.equal(first.count, PAGE_LIMIT + 5);
    const rest = await service.pageItems(BOB, 'n', { max: 10, after: first.entries.at(-1)?.id as string });
    assert.deepEqual(rest.entries.map((i) => i.id), ['i1000', 'i1001', 'i1002', 'i1003', 'i1004']);
    assert.equal(rest.firstIndex, PAGE_LIMIT);
    assert.ok(rest.entries[0]?.payload.includes('i1000'), 'pages carry payloads');
    assert.deepEqual((await service.pageItemIds(BOB, 'n', { max: 2, before: '' })).entries, ['i1003', 'i1004']);
    await rejects(service.pageItems(BOB, 'n', { max: 10, after: 'nope' }), 'item-not-found');
    await service.configure(OWNER, 'n', { accessModel: 'whitelist' });
    await rejects(service.pageItems(BOB, 'n', { max: 10 }), 'closed-node');
    await rejects(service.pageItemIds(BOB, 'n', { max: 10 }), 'closed-node');
  });

  it('pages nodes in id order', async () => {
    for (const id of ['c', 'a', 'b']) await service.create(OWNER, id);
    const page = await service.pageNodes({ max: 2, after: 'a' });
    assert.deepEqual([page.entries.map((n) => n.id), page.count, page.firstIndex], [['b', 'c'], 3, 1]);
  });
});

describe('publish options and node options', () => {
  it('publish-options: met preconditions publish, a differing one is precondition-not-met and publishes nothing', async () => {
    await service.create(OWNER, 'n', { accessModel: 'whitelist', maxItems: 5 });
    await service.publish(OWNER, 'n', { ...payload('a'), preconditions: { accessModel: 'whitelist', maxItems: 5 } });
    await rejects(service.publish(OWNER, 'n', { ...payload('b'), preconditions: { accessModel: 'open' } }), 'precondition-not-met');
    await rejects(service.publish(OWNER, 'n', { ...payload('b'), preconditions: { maxItems: 'max' } }), 'precondition-not-met');
    assert.deepEqual((await service.getItems(OWNER, 'n')).map((i) => i.id), ['a']);
    await rejects(service.publish(BOB, 'n', { ...payload('b'), preconditions: { accessModel: 'whitelist' } }), 'forbidden');
  });

  it('max_payload_size: a payload over the limit (in bytes) is payload-too-big', async () => {
    await service.create(OWNER, 'n', { maxPayloadSize: 20 });
    await service.publish(OWNER, 'n', { item: { id: 'ok', payload: '<p xmlns="x">123</p>' } }); // 20 bytes
    await rejects(service.publish(OWNER, 'n', { item: { id: 'big', payload: '<p xmlns="x">ää</p>' } }), 'payload-too-big'); // 19 characters, 21 bytes
    await rejects(service.configure(OWNER, 'n', { maxPayloadSize: 0 }), 'not-acceptable');
  });

  it('notification_type is carried by every event of the node', async () => {
    await service.create(OWNER, 'n', { notificationType: 'normal' });
    await service.subscribe(BOB, 'n', BOB);
    await service.publish(OWNER, 'n', payload('a'));
    await service.retract(OWNER, 'n', ['a'], true);
    assert.deepEqual(events.map((e) => [e.event.kind, e.event.messageType]), [['items', 'normal'], ['retract', 'normal']]);
    await rejects(service.configure(OWNER, 'n', { notificationType: 'chat' as never }), 'not-acceptable');
  });

  it('notify_sub: owners are told of new, approved and ended subscriptions; without it they are not', async () => {
    await service.create(OWNER, 'quiet');
    await service.subscribe(BOB, 'quiet', BOB);
    assert.equal(events.length, 0);
    await service.create(OWNER, 'n', { notifySub: true });
    await service.setAffiliations(OWNER, 'n', [{ jid: 'admin@a.test', affiliation: 'owner' }]);
    const sub = await service.subscribe(BOB, 'n', BOB);
    await service.unsubscribe(BOB, 'n', BOB, sub.subid);
    const seen = events.filter((e) => e.event.kind !== 'affiliation').map((e) => [e.event.kind, e.event.kind === 'subscription' ? e.event.subscription.state : '', e.to.sort()]);
    assert.deepEqual(seen, [
      ['subscription', 'subscribed', ['admin@a.test', 'owner@a.test']],
      ['subscription', 'none', ['admin@a.test', 'owner@a.test']],
    ]);
  });
});

class FakeTimers implements Timers {
  t = 1_000_000;
  timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  now = (): number => this.t;
  setTimer(fn: () => void, ms: number): { cancel(): void } {
    const timer = { at: this.t + ms, fn, live: true };
    this.timers.push(timer);
    return { cancel: () => (timer.live = false) };
  }
  /** Moves the clock and runs the timers that are due, with what they set off. */
  async advance(to: number, svc: PubsubService): Promise<void> {
    this.t = to;
    for (const timer of this.timers.filter((x) => x.live && x.at <= to)) {
      timer.live = false;
      timer.fn();
    }
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setImmediate(r));
      await svc.idle();
    }
  }
  get armed(): number[] {
    return this.timers.filter((x) => x.live).map((x) => x.at);
  }
}

const make = (store: Store, timers: FakeTimers): PubsubService =>
  new PubsubService({
    store,
    mayCreateNodes: () => true,
    notifier: (event: ServiceEvent, recipients: Recipient[]) => events.push({ event, to: recipients.map((r) => r.jid) }),
    now: timers.now,
    timers,
  });


describe('item expiry (pubsub#item_expire)', () => {
  it('removes each item when it is due, one timer at a time, tells subscribers, and restores the timer on start', async () => {
    const timers = new FakeTimers();
    const store = new MemoryStore();
    const svc = make(store, timers);
    await svc.start();
    await svc.create(OWNER, 'n', { itemExpire: 10 });
    await svc.create(OWNER, 'keep');
    await svc.subscribe(BOB, 'n', BOB);
    await svc.publish(OWNER, 'n', payload('a')); // due at t+10 s
    await svc.publish(OWNER, 'keep', payload('k'));
    timers.t += 4_000;
    await svc.publish(OWNER, 'n', payload('b')); // due at t+14 s
    assert.deepEqual(timers.armed, [1_010_000], 'one timer, for the earliest due item');
    await timers.advance(1_009_999, svc);
    assert.deepEqual((await svc.getItems(OWNER, 'n')).map((i) => i.id), ['a', 'b']);
    events.splice(0);
    await timers.advance(1_010_000, svc);
    assert.deepEqual((await svc.getItems(OWNER, 'n')).map((i) => i.id), ['b']);
    assert.deepEqual(events.map((e) => [{ ...e.event, archiveId: undefined }, e.to]), [[{ kind: 'retract', node: 'n', itemIds: ['a'], messageType: 'headline', archiveId: undefined }, [BOB]]]);
    assert.deepEqual(timers.armed, [1_014_000]);
    await svc.close();
    assert.deepEqual(timers.armed, [], 'close stops the timer');

    // A new service over the same store (a restart) arms the timer again.
    const again = make(store, timers);
    await again.start();
    assert.deepEqual(timers.armed, [1_014_000]);
    await timers.advance(1_020_000, again);
    assert.deepEqual(await again.getItems(OWNER, 'n'), []);
    assert.deepEqual((await again.getItems(OWNER, 'keep')).map((i) => i.id), ['k'], 'nodes without item_expire keep their items');
    assert.deepEqual(timers.armed, []);
  });

  it('start() re-arms timers from the timer index, reading only the nodes that have timers', async () => {
    const timers = new FakeTimers();
    const store = new MemoryStore();
    const svc = make(store, timers);
    for (let i = 0; i < 20; i++) await svc.create(OWNER, `plain${i}`);
    await svc.create(OWNER, 'exp', { itemExpire: 10 });
    await svc.create(OWNER, 'leased');
    await svc.publish(OWNER, 'exp', payload('a'));
    await svc.subscribe(BOB, 'leased', BOB, { expire: timers.t + 50_000 });
    await svc.close();
    // A restart over the same store: note which nodes start() reads.
    const read: string[] = [];
    const watched = new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          if (['listNodes', 'pageNodes', 'getNode', 'getSubscriptions', 'getItems', 'pageItemIds'].includes(String(prop))) read.push(`${String(prop)} ${String(args[0] ?? '')}`);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const again = make(watched, timers);
    await again.start();
    assert.deepEqual(timers.armed.sort(), [1_010_000, 1_050_000]);
    assert.deepEqual([...new Set(read)], ['pageItemIds exp', 'getItems exp'], 'only the expiring node is read (its oldest item)');
    await again.close();
  });

  it('reads leave out items past their expiry before the timers are restored', async () => {
    const timers = new FakeTimers();
    const store = new MemoryStore();
    const svc = make(store, timers);
    await svc.create(OWNER, 'n', { itemExpire: 60, sendLastPublishedItem: 'on_sub' });
    await svc.publish(OWNER, 'n', payload('old'));
    timers.t += 30_000;
    await svc.publish(OWNER, 'n', payload('young'));
    await svc.close();
    timers.t += 40_000; // 'old' is 70 s old: past its expiry; the restarted service has not restored its timers yet
    const again = make(store, timers);
    assert.deepEqual((await again.getItems(OWNER, 'n')).map((i) => i.id), ['young']);
    assert.deepEqual((await again.pageItems(OWNER, 'n', { max: 10 })).entries.map((i) => i.id), ['young']);
    assert.deepEqual((await again.pageItemIds(OWNER, 'n', { max: 10 })).entries, ['young']);
    timers.t += 30_000; // both past their expiry
    events.splice(0);
    await again.subscribe(BOB, 'n', BOB);
    assert.deepEqual(events.filter((e) => e.event.kind === 'items'), [], 'no expired item is sent as the last published one');
    assert.deepEqual(await again.getItems(OWNER, 'n'), []);
    await again.start();
    await timers.advance(timers.t, again);
    assert.deepEqual(await store.getItems('n'), [], 'the restored timer removes them');
    await again.close();
  });

  it('turning item_expire on removes what is already old; a republished item expires from its new time', async () => {
    const timers = new FakeTimers();
    const svc = make(new MemoryStore(), timers);
    await svc.create(OWNER, 'n');
    await svc.publish(OWNER, 'n', payload('old'));
    await svc.publish(OWNER, 'n', payload('re'));
    timers.t += 60_000;
    await svc.publish(OWNER, 'n', payload('re'));
    await svc.configure(OWNER, 'n', { itemExpire: 30 });
    await timers.advance(timers.t, svc);
    assert.deepEqual((await svc.getItems(OWNER, 'n')).map((i) => i.id), ['re']);
    await svc.configure(OWNER, 'n', { itemExpire: 'max' });
    assert.deepEqual(timers.armed, []);
  });
});

describe('authorize access model', () => {
  it('a subscription waits for an owner; owners are asked; pending entities neither read nor get notified', async () => {
    await service.create(OWNER, 'a', { accessModel: 'authorize' });
    await service.setAffiliations(OWNER, 'a', [{ jid: 'admin@a.test', affiliation: 'owner' }]);
    await service.publish(OWNER, 'a', payload('x'));
    events.splice(0);
    const sub = await service.subscribe(BOB, 'a', BOB);
    assert.equal(sub.state, 'pending');
    assert.deepEqual(events.map((e) => [e.event.kind, e.to.sort()]), [['authorization', ['admin@a.test', 'owner@a.test']]]);
    await rejects(service.subscribe(BOB, 'a', BOB), 'pending-subscription');
    await rejects(service.getItems(BOB, 'a'), 'must-subscribe');
    await rejects(service.getItems(CAROL, 'a'), 'must-subscribe');
    await rejects(service.authorize(CAROL, 'a', sub.subid, BOB, true), 'forbidden');
    assert.deepEqual((await service.pendingOf(OWNER)).map((s) => s.jid), [BOB]);
    events.splice(0);
    await service.publish(OWNER, 'a', payload('y'));
    assert.equal(events.length, 0, 'no notification while pending');
    await service.authorize(OWNER, 'a', sub.subid, BOB, true);
    assert.deepEqual(events.map((e) => [e.event.kind, e.event.kind === 'subscription' ? e.event.subscription.state : '', e.to]), [
      ['subscription', 'subscribed', [BOB]],
      ['items', '', [BOB]], // send_last_published_item on_sub (the default) once approved
    ]);
    assert.deepEqual((await service.getItems(BOB, 'a')).map((i) => i.id), ['x', 'y']);
    await rejects(service.authorize(OWNER, 'a', sub.subid, BOB, true), 'item-not-found');
    await service.publish(OWNER, 'a', payload('z'));
    assert.deepEqual(events.at(-1)?.to, [BOB]);
    assert.deepEqual(await service.pendingOf(OWNER), []);
  });

  it('a denied request is removed and the entity told; members subscribe at once', async () => {
    await service.create(OWNER, 'a', { accessModel: 'authorize' });
    const sub = await service.subscribe(CAROL, 'a', CAROL);
    events.splice(0);
    await service.authorize(OWNER, 'a', sub.subid, CAROL, false);
    assert.deepEqual(events.map((e) => [e.event.kind === 'subscription' && e.event.subscription.state, e.to]), [['none', [CAROL]]]);
    assert.deepEqual(await service.subscriptionsOf(CAROL), []);
    await service.setAffiliations(OWNER, 'a', [{ jid: 'bob@b.test', affiliation: 'member' }]);
    assert.equal((await service.subscribe(BOB, 'a', BOB)).state, 'subscribed');
  });

  it('a pending request is approved when the entity becomes a publisher, rejected when an outcast, approved when the node opens', async () => {
    await service.create(OWNER, 'a', { accessModel: 'authorize' });
    await service.subscribe(BOB, 'a', BOB);
    await service.subscribe(CAROL, 'a', CAROL);
    await service.subscribe('dave@b.test', 'a', 'dave@b.test');
    events.splice(0);
    await service.setAffiliations(OWNER, 'a', [
      { jid: 'bob@b.test', affiliation: 'publisher' },
      { jid: 'carol@b.test', affiliation: 'outcast' },
    ]);
    const told = events.filter((e) => e.event.kind === 'subscription').map((e) => [e.to[0], e.event.kind === 'subscription' && e.event.subscription.state]).sort();
    assert.deepEqual(told, [[BOB, 'subscribed'], [CAROL, 'none']]);
    await service.configure(OWNER, 'a', { accessModel: 'open' });
    assert.deepEqual((await service.getSubscriptions(OWNER, 'a')).map((s) => [s.jid, s.state]).sort(), [
      [BOB, 'subscribed'],
      ['dave@b.test', 'subscribed'],
    ]);
  });
});

describe('subscription options and multi-subscribe', () => {
  it('subscribe without options is idempotent; with other options it adds a subscription with its own subid', async () => {
    await service.create(OWNER, 'n');
    const a = await service.subscribe(BOB, 'n', BOB);
    assert.equal((await service.subscribe(BOB, 'n', BOB)).subid, a.subid);
    const paused = await service.subscribe(BOB, 'n', BOB, { deliver: false });
    assert.notEqual(paused.subid, a.subid);
    assert.equal((await service.subscribe(BOB, 'n', BOB, { deliver: false })).subid, paused.subid, 'same options: the same subscription');
    assert.equal((await service.subscribe(BOB, 'n', BOB, { deliver: true })).subid, a.subid);
    assert.equal((await service.getSubscriptions(OWNER, 'n')).length, 2);
    await rejects(service.unsubscribe(BOB, 'n', BOB, undefined), 'subid-required');
    await rejects(service.getSubscriptionOptions(BOB, 'n', BOB, undefined), 'subid-required');
    await rejects(service.getSubscriptionOptions(BOB, 'n', BOB, 'nope'), 'invalid-subid');
    await rejects(service.getSubscriptionOptions(CAROL, 'n', BOB, a.subid), 'forbidden');
    await rejects(service.getSubscriptionOptions(CAROL, 'n', CAROL, undefined), 'not-subscribed');
    assert.deepEqual((await service.getSubscriptionOptions(BOB, 'n', BOB, paused.subid)).options, { deliver: false, subscriptionType: 'items' });
    assert.deepEqual((await service.getSubscriptionOptions(OWNER, 'n', BOB, a.subid)).options, { deliver: true, subscriptionType: 'items' }, 'owners may look');
  });

  it('notifies a JID once per event, naming the delivering subscriptions when it has several; deliver=false pauses', async () => {
    const recipients: Recipient[][] = [];
    const svc = new PubsubService({ store: new MemoryStore(), mayCreateNodes: () => true, notifier: (_e, r) => recipients.push(r.map((x) => ({ ...x }))), newId: (() => { let i = 0; return () => `s${++i}`; })() });
    await svc.create(OWNER, 'n');
    await svc.subscribe(CAROL, 'n', CAROL);
    await svc.subscribe(BOB, 'n', BOB);
    await svc.subscribe(BOB, 'n', BOB, { deliver: false });
    await svc.publish(OWNER, 'n', payload('1'));
    assert.deepEqual(recipients.at(-1), [{ jid: CAROL, subid: 's1' }, { jid: BOB, subid: 's2', subids: ['s2'] }]);
    await svc.setSubscriptionOptions(BOB, 'n', BOB, 's3', { deliver: true });
    await svc.publish(OWNER, 'n', payload('2'));
    assert.deepEqual(recipients.at(-1), [{ jid: CAROL, subid: 's1' }, { jid: BOB, subid: 's2', subids: ['s2', 's3'] }]);
    await svc.setSubscriptionOptions(CAROL, 'n', CAROL, undefined, { deliver: false });
    await svc.publish(OWNER, 'n', payload('3'));
    assert.deepEqual(recipients.at(-1)?.map((r) => r.jid), [BOB]);
  });

  it('a leased subscription ends when due, the subscriber is told, and leases survive a restart', async () => {
    const timers = new FakeTimers();
    const store = new MemoryStore();
    const svc = make(store, timers);
    await svc.start();
    await svc.create(OWNER, 'n');
    await rejects(svc.subscribe(BOB, 'n', BOB, { expire: timers.t - 1 }), 'invalid-options');
    const leased = await svc.subscribe(BOB, 'n', BOB, { expire: timers.t + 30_000 });
    await svc.subscribe(CAROL, 'n', CAROL);
    await svc.setSubscriptionOptions(CAROL, 'n', CAROL, undefined, { expire: timers.t + 60_000 });
    assert.deepEqual(timers.armed, [timers.t + 30_000]);
    events.splice(0);
    await timers.advance(timers.t + 30_000, svc);
    assert.deepEqual((await svc.getSubscriptions(OWNER, 'n')).map((s) => s.jid), [CAROL]);
    assert.deepEqual(events.map((e) => [e.event.kind === 'subscription' && [e.event.subscription.subid, e.event.subscription.state], e.to]), [[[leased.subid, 'none'], [BOB]]]);
    await svc.close();
    const again = make(store, timers);
    await again.start();
    assert.deepEqual(timers.armed, [timers.t + 30_000], 'the remaining lease is armed again');
    await timers.advance(timers.t + 30_000, again);
    assert.deepEqual(await again.getSubscriptions(OWNER, 'n'), []);
  });
});

describe('send_last_published_item', () => {
  it('on_sub_and_presence is the default: a service advertising last-published MUST default to it (§4.3)', async () => {
    await service.create(OWNER, 'n');
    assert.equal((await service.getConfig(OWNER, 'n')).sendLastPublishedItem, 'on_sub_and_presence');
  });

  it('on_sub sends the newest item, marked delayed, to a new subscription only', async () => {
    await service.create(OWNER, 'n', { sendLastPublishedItem: 'on_sub' });
    await service.subscribe(CAROL, 'n', CAROL);
    assert.equal(events.length, 0, 'nothing to send on an empty node');
    await service.publish(OWNER, 'n', payload('a'));
    await service.publish(OWNER, 'n', payload('b'));
    events.splice(0);
    const sub = await service.subscribe(BOB, 'n', BOB);
    assert.equal(events.length, 1);
    const ev = events[0]?.event;
    assert.ok(ev?.kind === 'items' && ev.delayed && ev.item?.id === 'b' && ev.withPayload);
    assert.deepEqual(events[0]?.to, [BOB]);
    events.splice(0);
    assert.equal((await service.subscribe(BOB, 'n', BOB)).subid, sub.subid);
    assert.equal(events.length, 0, 'subscribing again sends nothing');
    await service.subscribe(BOB, 'n', BOB, { deliver: false });
    assert.equal(events.length, 0, 'a paused subscription gets nothing');
  });

  it('an approval sends the newest item: by the owner changing the subscription (§8.8.2), by the §8.6 form, or by an affiliation that needs no approval', async () => {
    await service.create(OWNER, 'n', { accessModel: 'authorize' });
    await service.publish(OWNER, 'n', payload('a'));
    const delayedTo = (): string[] => events.filter((e) => e.event.kind === 'items' && e.event.delayed).flatMap((e) => e.to);
    // Pending, then approved by the owner's subscriptions change.
    await service.subscribe(BOB, 'n', BOB);
    events.splice(0);
    await service.setSubscriptions(OWNER, 'n', [{ jid: BOB, state: 'subscribed' }]);
    assert.deepEqual(delayedTo(), [BOB]);
    // A subscription the owner makes.
    events.splice(0);
    await service.setSubscriptions(OWNER, 'n', [{ jid: 'dave@b.test/y', state: 'subscribed' }]);
    assert.deepEqual(delayedTo(), ['dave@b.test/y']);
    // Pending, then approved because the owner made it a publisher (§8.7: no approval needed any more).
    await service.subscribe(CAROL, 'n', CAROL);
    events.splice(0);
    await service.setAffiliations(OWNER, 'n', [{ jid: 'carol@b.test', affiliation: 'publisher' }]);
    assert.deepEqual(delayedTo(), [CAROL]);
    // The §8.6 form: once, not twice.
    const erin = 'erin@b.test/z';
    const pending = await service.subscribe(erin, 'n', erin);
    events.splice(0);
    await service.authorize(OWNER, 'n', pending.subid, erin, true);
    assert.deepEqual(delayedTo(), [erin]);
  });

  it('a JID subscribed twice gets the newest item with the SubID of the new subscription; on presence, a paused subscription does not stand for its active one', async () => {
    const got: Recipient[] = [];
    const svc = new PubsubService({ store: new MemoryStore(), mayCreateNodes: () => true, notifier: (event, recipients) => void (event.kind === 'items' && event.delayed && got.push(...recipients)) });
    await svc.create(OWNER, 'n');
    await svc.publish(OWNER, 'n', payload('a'));
    const paused = await svc.subscribe(BOB, 'n', BOB, { deliver: false });
    assert.equal(got.length, 0, 'a paused subscription gets nothing');
    const active = await svc.subscribe(BOB, 'n', BOB, { deliver: true });
    assert.notEqual(active.subid, paused.subid);
    assert.deepEqual(got.splice(0), [{ jid: BOB, subid: active.subid, subids: [active.subid] }]);
    assert.equal(await svc.entityAvailable(BOB), 1, 'coming online: sent through the active subscription, whichever the store lists first');
    assert.deepEqual(got.map((r) => r.subids), [[active.subid]]);
  });

  it('never sends nothing', async () => {
    await service.create(OWNER, 'n', { sendLastPublishedItem: 'never' });
    await service.publish(OWNER, 'n', payload('a'));
    events.splice(0);
    await service.subscribe(BOB, 'n', BOB);
    assert.equal(events.length, 0);
    await rejects(service.configure(OWNER, 'n', { sendLastPublishedItem: 'sometimes' as never }), 'not-acceptable');
  });
});

describe('node archive (MAM)', () => {
  it('records publications and tombstones of retractions, purges and expiries, in order, for readers only', async () => {
    const timers = new FakeTimers();
    const svc = make(new MemoryStore(), timers);
    await svc.create(OWNER, 'n', { itemExpire: 60 });
    await svc.publish(OWNER, 'n', payload('a'));
    timers.t += 1000;
    await svc.publish(OWNER, 'n', payload('b'));
    timers.t += 1000;
    await svc.retract(OWNER, 'n', ['a'], undefined);
    await timers.advance(timers.t + 60_000, svc); // b expires
    await svc.publish(OWNER, 'n', payload('c'));
    await svc.purge(OWNER, 'n');
    const page = await svc.queryArchive(BOB, 'n', {});
    const summary = page.entries.map((e) => (e.item ? `+${e.item.id}` : e.purged ? 'purge' : `-${e.retracted?.join(',')}`));
    assert.deepEqual(summary, ['+a', '+b', '-a', '-b', '+c', 'purge']);
    assert.ok(page.entries[0]?.item?.payload.includes('a'), 'publications keep their payload');
    const after = await svc.queryArchive(BOB, 'n', { afterId: page.entries[1]?.id as string }, { max: 2 });
    assert.deepEqual([after.entries.map((e) => e.id), after.firstIndex, after.count], [page.entries.slice(2, 4).map((e) => e.id), 0, 4]);
    await rejects(svc.queryArchive(BOB, 'n', { afterId: 'nope' }), 'item-not-found');
    await svc.configure(OWNER, 'n', { accessModel: 'whitelist' });
    await rejects(svc.queryArchive(BOB, 'n', {}), 'closed-node');
    await svc.create(OWNER, 't', { persistItems: false, deliverPayloads: false });
    await rejects(svc.queryArchive(OWNER, 't', {}), 'persistent-items-unsupported');
  });

  it('each notification of a recorded change carries the archive id of its entry; a last-published resend carries none', async () => {
    await service.create(OWNER, 'n');
    await service.subscribe(BOB, 'n', BOB);
    await service.publish(OWNER, 'n', payload('a'));
    await service.retract(OWNER, 'n', ['a'], true);
    await service.publish(OWNER, 'n', payload('b'));
    await service.purge(OWNER, 'n');
    const ids = (await service.queryArchive(BOB, 'n', {})).entries.map((e) => e.id);
    assert.equal(ids.length, 4);
    assert.deepEqual(
      events.filter((e) => e.event.kind !== 'subscription').map((e) => e.event.archiveId),
      ids,
    );
    await service.publish(OWNER, 'n', payload('c'));
    events = [];
    await service.subscribe(CAROL, 'n', CAROL);
    const resent = events.find((e) => e.event.kind === 'items');
    assert.ok(resent && resent.event.kind === 'items' && resent.event.delayed);
    assert.equal(resent.event.archiveId, undefined, 'an old item sent again is not a new archive entry');
  });
});

describe('concurrency', () => {
  it('concurrent subscribes to a node not yet in the cache all take effect (one shared load)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'hermod-cold-'));
    const store = new LevelStore(path.join(dir, 'db')); // real I/O: loads interleave with changes
    await store.open();
    const notified: string[] = [];
    const make = (): PubsubService =>
      new PubsubService({ store, mayCreateNodes: () => true, notifier: (event, recipients) => void (event.kind === 'items' && notified.push(...recipients.map((r) => r.jid))) });
    await make().create(OWNER, 'cold');
    const fresh = make(); // empty cache, same store
    const jids = Array.from({ length: 10 }, (_, i) => `user${i}@b.test/r`);
    await Promise.all(jids.map((jid) => fresh.subscribe(jid, 'cold', jid)));
    await fresh.publish(OWNER, 'cold', payload('x'));
    assert.deepEqual(notified.sort(), [...jids].sort());
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('registered node configuration fields (XEP-0060 §16.4.3) in the core', () => {
  it('stores metadata fields and refuses values it cannot honour, naming field and value', async () => {
    await service.create(OWNER, 'm', { contact: ['bard@a.test'], language: 'en', bodyXslt: 'http://x.test/b.xslt', dataformXslt: 'http://x.test/f.xslt', itemReply: 'publisher', nodeType: 'leaf', subscribe: true, tempsub: false });
    const config = await service.getConfig(OWNER, 'm');
    assert.deepEqual([config.contact, config.language, config.bodyXslt, config.dataformXslt], [['bard@a.test'], 'en', 'http://x.test/b.xslt', 'http://x.test/f.xslt']);
    const refusals: Array<[Partial<NodeConfig>, RegExp]> = [
      [{ nodeType: 'collection' }, /pubsub#node_type 'collection'/],
      [{ collection: ['blogs'] }, /pubsub#collection 'blogs'/],
      [{ children: ['c'] }, /pubsub#children 'c'/],
      [{ childrenAssociationPolicy: 'all' }, /pubsub#children_association_policy 'all'/],
      [{ childrenAssociationWhitelist: ['x@a.test'] }, /pubsub#children_association_whitelist 'x@a.test'/],
      [{ childrenMax: 'max' }, /pubsub#children_max 'max'/],
      [{ itemReply: 'owner' }, /pubsub#itemreply 'owner'/],
      [{ tempsub: true }, /pubsub#tempsub '1'/],
      [{ purgeOffline: true }, /pubsub#purge_offline '1'/],
      [{ language: 'no language' }, /pubsub#language 'no language'/],
    ];
    for (const [change, text] of refusals) {
      for (const attempt of [service.create(OWNER, 'refused', change), service.configure(OWNER, 'm', change)]) {
        await assert.rejects(attempt, (err: unknown) => err instanceof PubsubError && err.condition === 'not-acceptable' && text.test(err.text ?? ''));
      }
    }
    assert.deepEqual(await service.getConfig(OWNER, 'm'), config, 'a refused change changes nothing');
  });

  it('subscribe=0: subscription requests are refused (§6.1.3.11); an owner may still set one', async () => {
    await service.create(OWNER, 's', { subscribe: false });
    await rejects(service.subscribe(BOB, 's', BOB), 'subscriptions-unsupported');
    await service.setSubscriptions(OWNER, 's', [{ jid: BOB, state: 'subscribed' }]);
    assert.deepEqual((await service.getSubscriptions(OWNER, 's')).map((s) => [s.jid, s.state]), [[BOB, 'subscribed']]);
  });

  it('publish-options compare registered fields with the node value', async () => {
    await service.create(OWNER, 'p', { contact: ['bard@a.test'] });
    await service.publish(OWNER, 'p', { ...payload('a'), preconditions: { contact: ['bard@a.test'], nodeType: 'leaf', tempsub: false } });
    await rejects(service.publish(OWNER, 'p', { ...payload('b'), preconditions: { nodeType: 'collection' } }), 'precondition-not-met');
    await rejects(service.publish(OWNER, 'p', { ...payload('b'), preconditions: { contact: [] } }), 'precondition-not-met');
  });
});

describe('events by kind (what the notifier is given)', () => {
  it('configuration: the new configuration when the node delivers payloads, none otherwise (§8.2.5.3)', async () => {
    await service.create(OWNER, 'c', { notifyConfig: true });
    await service.subscribe(BOB, 'c', BOB);
    await service.configure(OWNER, 'c', { title: 'new title' });
    const full = events.at(-1)?.event;
    assert.ok(full?.kind === 'config' && full.config?.title === 'new title', JSON.stringify(full));
    await service.configure(OWNER, 'c', { deliverPayloads: false });
    const bare = events.at(-1)?.event;
    assert.ok(bare?.kind === 'config' && bare.config === undefined, JSON.stringify(bare));
  });

  it('delete carries the redirect URI given by the owner (§8.4.1)', async () => {
    await service.create(OWNER, 'd');
    await service.subscribe(BOB, 'd', BOB);
    await service.delete(OWNER, 'd', 'xmpp:pubsub.a.test?;node=new');
    assert.deepEqual(events.at(-1), { event: { kind: 'delete', node: 'd', redirect: 'xmpp:pubsub.a.test?;node=new', messageType: 'headline' }, to: [BOB] });
  });

  it('delete is also sent to subscriptions pending approval (§8.4.2: "SHOULD include pending and unconfigured subscriptions")', async () => {
    await service.create(OWNER, 'p', { accessModel: 'authorize' });
    await service.setSubscriptions(OWNER, 'p', [{ jid: BOB, state: 'subscribed' }]);
    await service.subscribe(CAROL, 'p', CAROL);
    events.splice(0);
    await service.delete(OWNER, 'p');
    assert.deepEqual(events.filter((e) => e.event.kind === 'delete').flatMap((e) => e.to).sort(), [BOB, CAROL].sort());
  });

  it('transient notification-only node: no item in the request, none in the event, no id (§4.3); persistent notification-only takes an empty item', async () => {
    await service.create(OWNER, 't', { persistItems: false, deliverPayloads: false });
    await service.subscribe(BOB, 't', BOB);
    await rejects(service.publish(OWNER, 't', { item: {} }), 'item-forbidden');
    await rejects(service.publish(OWNER, 't', { item: { id: 'x' } }), 'item-forbidden');
    assert.equal(await service.publish(OWNER, 't', {}), undefined);
    assert.deepEqual(events.at(-1), { event: { kind: 'items', node: 't', withPayload: false, messageType: 'headline' }, to: [BOB] });
    await service.create(OWNER, 'pn', { deliverPayloads: false });
    assert.equal(await service.publish(OWNER, 'pn', { item: { id: 'e' } }), 'e');
    await rejects(service.publish(OWNER, 'pn', {}), 'item-required');
  });

  it('publish_node_full reject: node-full on a full node, except for an existing id', async () => {
    await service.create(OWNER, 'f', { maxItems: 1, publishNodeFull: 'reject' });
    await service.publish(OWNER, 'f', payload('a'));
    await rejects(service.publish(OWNER, 'f', payload('b')), 'node-full');
    await service.publish(OWNER, 'f', payload('a'));
    assert.deepEqual((await service.getItems(OWNER, 'f')).map((i) => i.id), ['a']);
  });
});

describe('too many subscriptions (§6.1.3.13)', () => {
  it('one bare JID holds at most SUBSCRIPTIONS_PER_JID subscriptions to a node, whatever its resources and options; a node at most PENDING_PER_NODE pending ones; others still subscribe', async () => {
    await service.create(OWNER, 'n');
    for (let i = 0; i < SUBSCRIPTIONS_PER_JID; i++) await service.subscribe(`bob@b.test/r${i}`, 'n', `bob@b.test/r${i}`);
    await rejects(service.subscribe('bob@b.test/more', 'n', 'bob@b.test/more'), 'too-many-subscriptions');
    await rejects(service.subscribe('bob@b.test/r0', 'n', 'bob@b.test/r0', { deliver: false }), 'too-many-subscriptions');
    // One it holds is still answered as it is (no new subscription asked for).
    assert.equal((await service.subscribe('bob@b.test/r0', 'n', 'bob@b.test/r0')).state, 'subscribed');
    await service.subscribe(CAROL, 'n', CAROL);
    await service.unsubscribe('bob@b.test/r1', 'n', 'bob@b.test/r1', undefined);
    await service.subscribe('bob@b.test/more', 'n', 'bob@b.test/more');

    await service.create(OWNER, 'a', { accessModel: 'authorize' });
    // One bare JID's resources wait for approval PENDING_PER_JID at a time.
    for (let i = 0; i < PENDING_PER_JID; i++) assert.equal((await service.subscribe(`many@c.test/r${i}`, 'a', `many@c.test/r${i}`)).state, 'pending');
    await rejects(service.subscribe('many@c.test/more', 'a', 'many@c.test/more'), 'too-many-subscriptions');
    for (let i = PENDING_PER_JID; i < PENDING_PER_NODE; i++) await service.subscribe(`u${i}@c.test`, 'a', `u${i}@c.test`);
    await rejects(service.subscribe('late@c.test', 'a', 'late@c.test'), 'too-many-subscriptions');
    const first = (await service.pendingOf(OWNER, 'a'))[0];
    await service.authorize(OWNER, 'a', first?.subid as string, first?.jid as string, false);
    assert.equal((await service.subscribe('late@c.test', 'a', 'late@c.test')).state, 'pending', 'room again once an owner answered');
  });
});
