// A store that cannot write (disk full, CouchDB down): requests that write answer
// internal-server-error (no detail leaks to the requester), nothing half-done is notified, and
// the service keeps serving — once the store recovers, the same node takes publications again.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Element, parse } from 'ltx';
import { silentLogger } from '../../src/log.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import type { ServiceEvent } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';
import { pubsubRoutes } from '../../src/xmpp/pubsub-handlers.ts';
import { Router } from '../../src/xmpp/router.ts';

const WRITES = new Set(['putNode', 'deleteNode', 'setAffiliation', 'putSubscription', 'deleteSubscription', 'publishItem', 'publishMany', 'retractItems', 'putItem', 'deleteItem', 'trimItems', 'purgeItems', 'appendArchive']);

/** A MemoryStore whose writes fail while `failing` is set, as a full disk would. */
function failingStore(): { store: Store; setFailing(on: boolean): void } {
  const inner = new MemoryStore();
  let failing = false;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (failing && WRITES.has(String(prop))) return Promise.reject(new Error('ENOSPC: no space left on device, write /var/lib/hermod/store/000123.log'));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, setFailing: (on) => (failing = on) };
}

const SVC = 'pubsub.a.test';
const OWNER = 'owner@a.test/desk';
let n = 0;
const iq = (child: string, from = OWNER): Element => parse(`<iq type='set' id='r${++n}' from='${from}' to='${SVC}'>${child}</iq>`);
const publish = (id: string): Element => iq(`<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item id='${id}'><p xmlns='urn:x'>${id}</p></item></publish></pubsub>`);
const conditionOf = (reply: Element | undefined): string | undefined =>
  reply?.getChild('error')?.getChildElements().find((c) => c.getNS() === 'urn:ietf:params:xml:ns:xmpp-stanzas')?.name;

describe('store write failure', () => {
  it('answers internal-server-error, notifies nothing, and keeps serving once the store recovers', async () => {
    const { store, setFailing } = failingStore();
    const events: ServiceEvent[] = [];
    const service = new PubsubService({ store, admins: [], mayCreateNodes: () => true, notifier: (event) => events.push(event) });
    await service.start();
    const router = new Router({ jid: SVC, routes: new Map(pubsubRoutes(service)), log: silentLogger });
    assert.equal((await router.handle(iq(`<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='n'/></pubsub>`)))?.attrs.type, 'result');
    await router.handle(iq(`<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='n' jid='${OWNER}'/></pubsub>`));
    events.length = 0;

    setFailing(true);
    const failed = await router.handle(publish('lost'));
    assert.equal(failed?.attrs.type, 'error');
    assert.equal(conditionOf(failed), 'internal-server-error');
    assert.doesNotMatch(failed?.toString() ?? '', /ENOSPC|var\/lib/, 'no detail of the failure goes to the requester');
    assert.deepEqual(events, [], 'nothing notified for a publication that was not stored');
    // Other writes fail the same way; reads still work.
    assert.equal(conditionOf(await router.handle(iq(`<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='m'/></pubsub>`))), 'internal-server-error');
    const read = await router.handle(parse(`<iq type='get' id='g1' from='${OWNER}' to='${SVC}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'/></pubsub></iq>`));
    assert.equal(read?.attrs.type, 'result');

    setFailing(false);
    assert.equal((await router.handle(publish('kept')))?.attrs.type, 'result', 'the node is not left locked');
    assert.deepEqual((await store.getItems('n')).map((i) => i.id), ['kept']);
    assert.deepEqual((events as ServiceEvent[]).map((e) => e.kind === 'items' && e.item?.id), ['kept']);
    assert.equal(await store.getNode('m'), undefined);
    await router.idle();
    await service.close();
  });
});
