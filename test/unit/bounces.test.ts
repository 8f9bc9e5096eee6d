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

it('a JID must keep bouncing for the window: a server restarting (its domain unreachable for a while) costs nobody their subscriptions; a bounce a day after the last starts over', async () => {
  const ended: string[] = [];
  let now = 1_000_000;
  const tracker = new BounceTracker({ maxBounces: 3, windowMs: 600_000, now: () => now, log: silentLogger, unsubscribe: async (jid) => (ended.push(jid), 1) });
  // The partner's server restarts: 50 notifications bounce within 20 s.
  for (let i = 0; i < 50; i++, now += 400) tracker.bounced(bounce('pubsub.partner.test', 'remote-server-not-found'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ended, [], 'within the window: kept');
  // A day later one notification bounces (a hiccup): a new count, not the 51st.
  now += 24 * 3600_000;
  tracker.bounced(bounce('pubsub.partner.test', 'remote-server-not-found'));
  now += 700_000;
  tracker.bounced(bounce('pubsub.partner.test', 'remote-server-not-found'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ended, [], 'two bounces of the new count, past the window: still under maxBounces');
  // A domain that is gone for good: bounces keep coming past the window.
  tracker.bounced(bounce('ghost@gone.test', 'remote-server-not-found'));
  now += 300_000;
  tracker.bounced(bounce('ghost@gone.test', 'remote-server-not-found'));
  tracker.bounced(bounce('ghost@gone.test', 'remote-server-not-found'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ended, [], 'three bounces within 5 min: not yet');
  now += 300_001;
  tracker.bounced(bounce('ghost@gone.test', 'remote-server-not-found'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ended, ['ghost@gone.test'], 'bouncing for the whole window: removed');
});
