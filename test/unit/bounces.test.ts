// Bounce counting (XEP-0060 §4.4): consecutive unreachable-address errors per JID end its
// subscriptions at the limit; anything heard from the JID resets the count; transient errors
// (wait type, service-unavailable) do not count.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { parse, type Element } from 'ltx';
import { silentLogger } from '../../src/log.ts';
import { BounceTracker } from '../../src/xmpp/bounces.ts';

const bounce = (from: string, condition: string, type = 'cancel'): Element =>
  parse(`<message type='error' from='${from}' to='pubsub.a.test'><error type='${type}'><${condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`);

it('ends the subscriptions of a JID after maxBounces unreachable errors in a row', async () => {
  const ended: string[] = [];
  const tracker = new BounceTracker({ maxBounces: 3, log: silentLogger, unsubscribe: async (jid) => (ended.push(jid), 2) });
  tracker.bounced(bounce('ghost@nowhere.test', 'remote-server-not-found'));
  tracker.bounced(bounce('ghost@nowhere.test', 'remote-server-not-found'));
  tracker.heard('ghost@nowhere.test/phone'); // it spoke: reachable after all
  tracker.bounced(bounce('ghost@nowhere.test', 'remote-server-timeout'));
  tracker.bounced(bounce('ghost@nowhere.test', 'remote-server-timeout', 'wait')); // transient
  tracker.bounced(bounce('ghost@nowhere.test', 'service-unavailable')); // ambiguous
  tracker.bounced(bounce('ghost@nowhere.test', 'item-not-found'));
  assert.deepEqual(ended, []);
  assert.equal(tracker.tracked, 1);
  tracker.bounced(bounce('ghost@nowhere.test', 'gone'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ended, ['ghost@nowhere.test']);
  assert.equal(tracker.unsubscribed, 2);
  assert.equal(tracker.tracked, 0);
});
