// One copy of an item published to several nodes (`{urn:hermod:pubsub:0}one_copy`): the
// service's ledger (src/pubsub/one-copy.ts) and its use by PubsubService.publishMany, the
// subscription options form field, and the partner's PayloadsSeen (src/replication/payloads-seen.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { OneCopyLedger } from '../../src/pubsub/one-copy.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { applySubscriptionOptions, DEFAULT_SUBSCRIPTION_OPTIONS, sameOptions } from '../../src/pubsub/subscription-options.ts';
import type { Item, Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { PayloadsSeen } from '../../src/replication/payloads-seen.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { ONE_COPY_FIELD, parseSubscribeOptionsForm, subscribeOptionsForm } from '../../src/xmpp/subscribe-options-form.ts';
import { submittedOptions } from './notify-fixture.ts';

const item = (id: string, payload: string): Item => ({ id, payload, publisher: 'site@a.test', published: 1 });
const partner = (jid: string, oneCopy = true): Recipient => ({ jid, subid: `s-${jid}`, ...(oneCopy ? { oneCopy: true as const } : {}) });
const jids = (rs: Recipient[]): string[] => rs.map((r) => r.jid);

describe('OneCopyLedger', () => {
  it('the first node sends the payload; another node sends it without to the one-copy recipients that got it, in full to the rest', () => {
    const ledger = new OneCopyLedger();
    const x = item('x', '<entry>x</entry>');
    const first = ledger.split('/tags/a', x, [partner('p1'), partner('plain', false)]);
    assert.deepEqual([jids(first.full), jids(first.stubs)], [['p1', 'plain'], []]);
    // p2 follows only /tags/b: it never got the payload.
    const second = ledger.split('/tags/b', x, [partner('p1'), partner('plain', false), partner('p2')]);
    assert.deepEqual([jids(second.full), jids(second.stubs)], [['plain', 'p2'], ['p1']]);
    // A third node: p2 got it through /tags/b meanwhile.
    const third = ledger.split('/tags/c', x, [partner('p1'), partner('p2')]);
    assert.deepEqual([jids(third.full), jids(third.stubs)], [[], ['p1', 'p2']]);
  });

  it('another payload under the same id, the same node again, or no one-copy recipient: everything in full', () => {
    const ledger = new OneCopyLedger();
    ledger.split('/tags/a', item('x', 'v1'), [partner('p1')]);
    assert.deepEqual(jids(ledger.split('/tags/b', item('x', 'v2'), [partner('p1')]).full), ['p1'], 'a different payload');
    assert.deepEqual(jids(ledger.split('/tags/b', item('x', 'v2'), [partner('p1')]).full), ['p1'], 'the same node as the one that sent it');
    assert.deepEqual(jids(ledger.split('/tags/c', item('x', 'v2'), [partner('p1')]).stubs), ['p1'], 'a third node after the new payload');
    const plain = [partner('q', false)];
    assert.equal(ledger.split('/tags/d', item('y', 'v'), plain).full, plain, 'no one-copy recipient: the list as it was');
  });

  it('forgets the oldest beyond its bound: then the payload travels again, never less', () => {
    const ledger = new OneCopyLedger(1500); // two of these entries
    ledger.split('/tags/a', item('old', 'o'.repeat(400)), [partner('p1')]);
    for (let i = 0; i < 5; i++) ledger.split('/tags/a', item(`n${i}`, 'n'.repeat(400)), [partner('p1')]);
    assert.deepEqual(jids(ledger.split('/tags/b', item('old', 'o'.repeat(400)), [partner('p1')]).full), ['p1']);
    assert.deepEqual(jids(ledger.split('/tags/b', item('n4', 'n'.repeat(400)), [partner('p1')]).stubs), ['p1'], 'the newest is remembered');
  });
});

describe('PubsubService with one-copy subscriptions', () => {
  it('an item published to two nodes: the one-copy subscriber gets the second notification without payload (with its archive id), a plain subscriber both in full', async () => {
    const events: Array<{ event: ServiceEvent; to: string[] }> = [];
    const service = new PubsubService({
      store: new MemoryStore(),
      mayCreateNodes: () => true,
      notifier: (event, recipients) => events.push({ event, to: jids(recipients) }),
    });
    for (const node of ['/tags/a', '/tags/b']) {
      await service.create('site@a.test', node, { accessModel: 'open' });
      await service.subscribe('pubsub.b.test', node, 'pubsub.b.test', { oneCopy: true });
      await service.subscribe('carol@c.test', node, 'carol@c.test');
    }
    events.length = 0;
    const payload = '<entry xmlns="http://www.w3.org/2005/Atom"><title>both</title></entry>';
    await service.publish('site@a.test', '/tags/a', { item: { id: 'doc', payload } });
    await service.publish('site@a.test', '/tags/b', { item: { id: 'doc', payload } });
    const seen = events.map(({ event, to }) => {
      const e = event as Extract<ServiceEvent, { kind: 'items' }>;
      return { node: e.node, to, withPayload: e.withPayload, payload: e.item?.payload === payload, archived: e.archiveId !== undefined };
    });
    assert.deepEqual(seen, [
      { node: '/tags/a', to: ['pubsub.b.test', 'carol@c.test'], withPayload: true, payload: true, archived: true },
      { node: '/tags/b', to: ['carol@c.test'], withPayload: true, payload: true, archived: true },
      { node: '/tags/b', to: ['pubsub.b.test'], withPayload: false, payload: false, archived: true },
    ]);
    // Both nodes keep the item in full: a catch-up or a history read gets the payload.
    assert.equal((await service.getItems('pubsub.b.test', '/tags/b'))[0]?.payload, payload);
  });

  it('a JID with two subscriptions to a node gets the payload unless both asked for one copy', async () => {
    const events: Array<{ event: ServiceEvent; to: string[] }> = [];
    const service = new PubsubService({ store: new MemoryStore(), mayCreateNodes: () => true, notifier: (event, recipients) => events.push({ event, to: jids(recipients) }) });
    await service.create('site@a.test', '/tags/a', { accessModel: 'open' });
    await service.create('site@a.test', '/tags/b', { accessModel: 'open' });
    await service.subscribe('p@b.test', '/tags/a', 'p@b.test', { oneCopy: true });
    await service.subscribe('p@b.test', '/tags/b', 'p@b.test', { oneCopy: true });
    await service.subscribe('p@b.test', '/tags/b', 'p@b.test', { deliver: true });
    events.length = 0;
    await service.publish('site@a.test', '/tags/a', { item: { id: 'd', payload: '<p xmlns="x"/>' } });
    await service.publish('site@a.test', '/tags/b', { item: { id: 'd', payload: '<p xmlns="x"/>' } });
    assert.deepEqual(events.map(({ event }) => (event as Extract<ServiceEvent, { kind: 'items' }>).withPayload), [true, true]);
  });
});

describe('subscription options form: one_copy', () => {
  it('is offered in Clark notation (XEP-0068 §3.4) with its value, and parsed both ways', () => {
    const value = (o: object): string | undefined => subscribeOptionsForm({ ...DEFAULT_SUBSCRIPTION_OPTIONS, ...o }).getChildren('field').find((f) => f.attrs.var === ONE_COPY_FIELD)?.getChildText('value') ?? undefined;
    assert.equal(ONE_COPY_FIELD, '{urn:hermod:pubsub:0}one_copy');
    assert.equal(value({}), '0');
    assert.equal(value({ oneCopy: true }), '1');
    assert.deepEqual(parseSubscribeOptionsForm(submittedOptions({ [ONE_COPY_FIELD]: 'true' })), { oneCopy: true });
    const on = applySubscriptionOptions({ ...DEFAULT_SUBSCRIPTION_OPTIONS }, { oneCopy: true }, 0);
    const off = applySubscriptionOptions(on, parseSubscribeOptionsForm(submittedOptions({ [ONE_COPY_FIELD]: '0' })), 0);
    assert.equal(off.oneCopy, undefined, 'off is not stored');
    assert.equal(sameOptions(on, off), false, 'multi-subscribe tells them apart');
  });
  it('refuses another value with invalid-options naming the field', () => {
    assert.throws(
      () => parseSubscribeOptionsForm(submittedOptions({ [ONE_COPY_FIELD]: 'sometimes' })),
      (err: unknown) => err instanceof PubsubError && err.condition === 'invalid-options' && /one_copy/.test(err.message),
    );
  });
});

describe('PayloadsSeen', () => {
  it('a payload written after the previous notification of the item on the node stands for a notification without payload; an older one does not', async () => {
    const seen = new PayloadsSeen();
    const floor = seen.now();
    // v1: the payload through /a, then the notification without it through /b.
    const a1 = seen.notified('svc', '/a', 'x', floor);
    seen.written('svc', 'x', a1.at);
    const b1 = seen.notified('svc', '/b', 'x', floor);
    assert.equal(b1.prev, floor, 'nothing known of /b before its follow began');
    assert.equal(await seen.wait('svc', 'x', b1.prev, 10), true);
    assert.equal(await seen.wait('other', 'x', b1.prev, 10), false, 'per service');
    // v2: its payload never written (lost on the way): v1's write does not stand for it.
    const b2 = seen.notified('svc', '/b', 'x', floor);
    assert.equal(b2.prev, b1.at);
    assert.equal(await seen.wait('svc', 'x', b2.prev, 30), false);
    // v3: the notification without payload first, the payload after: the wait ends with the write.
    const b3 = seen.notified('svc', '/b', 'x', floor);
    const waiting = seen.wait('svc', 'x', b3.prev, 5_000);
    assert.equal(seen.waiters, 1);
    const a3 = seen.notified('svc', '/a', 'x', floor);
    setTimeout(() => seen.written('svc', 'x', a3.at), 20);
    assert.equal(await waiting, true);
    assert.equal(seen.waiters, 0);
  });

  it('a record forgotten and made again ignores a slow write of a notification from before', async () => {
    const seen = new PayloadsSeen(2);
    const floor = seen.now();
    const old = seen.notified('svc', '/a', 'x', floor); // its write is slow
    seen.notified('svc', '/a', 'p', floor);
    seen.notified('svc', '/a', 'q', floor); // x forgotten
    const stub = seen.notified('svc', '/b', 'x', floor);
    seen.written('svc', 'x', old.at);
    assert.equal(await seen.wait('svc', 'x', stub.prev, 20), false, 'the old write stands for nothing');
    assert.equal(await seen.wait('svc', 'unknown', 0, 10), false);
  });

  it('a follow that begins later knows nothing older; stop ends a wait; the time bound holds', async () => {
    const seen = new PayloadsSeen();
    const a = seen.notified('svc', '/a', 'y', seen.now());
    seen.written('svc', 'y', a.at);
    const floor = seen.now(); // /b followed only now
    const b = seen.notified('svc', '/b', 'y', floor);
    assert.equal(await seen.wait('svc', 'y', b.prev, 20), false, "a payload written before /b's follow began stands for nothing there");
    const stop = new AbortController();
    const stopped = seen.wait('svc', 'y', b.prev, 5_000, stop.signal);
    stop.abort();
    assert.equal(await stopped, false);
    const t0 = Date.now();
    assert.equal(await seen.wait('svc', 'never', 0, 50), false);
    assert.ok(Date.now() - t0 >= 45);
    assert.equal(seen.waiters, 0);
  });
});
