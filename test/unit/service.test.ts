// Unit tests of the pub/sub core (pure logic, in-memory store): permissions from the capability
// table, XEP-0060 error names, and the events handed to the notifier.

import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';

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
    assert.deepEqual(events.map((e) => [e.event.kind, e.to]), [['subscription', [BOB]]]);
    await service.publish(OWNER, 'w', payload('after'));
    assert.equal(events.length, 1, 'no notification after removal');
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
    assert.ok(ev?.event.kind === 'items' && ev.event.withPayload && ev.event.item.payload.includes('one'));
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
    assert.deepEqual(events.map((e) => e.event), [{ kind: 'retract', node: 'n', itemIds: ['o'] }]);
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
