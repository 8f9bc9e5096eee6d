// The component's presence view across its own reconnects: a subscriber who was online before
// Hermod's connection dropped is not "coming online" when the server tells it again after the
// reconnect, so on_sub_and_presence nodes do not send their last item once more to everyone.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'ltx';
import { silentLogger } from '../../src/log.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { CONTACTS_SPACE, PresenceHandler, PresenceTracker, REJOIN_MS } from '../../src/xmpp/presence.ts';

const available = (from: string): ReturnType<typeof parse> => parse(`<presence from='${from}' to='pubsub.a.test'/>`);
const unavailable = (from: string): ReturnType<typeof parse> => parse(`<presence type='unavailable' from='${from}' to='pubsub.a.test'/>`);

async function handler(): Promise<{ h: PresenceHandler; told: string[]; tracker: PresenceTracker }> {
  const store = new MemoryStore();
  await store.open();
  const told: string[] = [];
  const tracker = new PresenceTracker();
  const h = new PresenceHandler({ jid: 'pubsub.a.test', space: store.state(CONTACTS_SPACE), dataDir: '/nonexistent', send: () => true, tracker, onAvailable: (jid) => void told.push(jid), log: silentLogger });
  await h.load();
  return { h, told, tracker };
}

describe('presence across the component’s reconnects', () => {
  it('a resource available before the drop and seen again after the reconnect is not told as coming online; one that left meanwhile, or a new one, is', async () => {
    const { h, told, tracker } = await handler();
    h.online();
    h.handle(available('bob@b.test/phone'));
    h.handle(available('carol@b.test/desk'));
    h.handle(available('dave@b.test/x'));
    assert.deepEqual(told.splice(0), ['bob@b.test/phone', 'carol@b.test/desk', 'dave@b.test/x'], 'first seen: coming online');
    h.offline();
    assert.equal(tracker.size, 0, 'nothing is known while offline');
    h.online();
    // The probes' answers: bob and carol were there all along; dave left and came back; erin is new.
    h.handle(available('bob@b.test/phone'));
    h.handle(unavailable('dave@b.test/x'));
    h.handle(available('dave@b.test/x'));
    h.handle(available('erin@b.test/y'));
    h.handle(available('carol@b.test/desk'));
    assert.deepEqual(told.splice(0), ['dave@b.test/x', 'erin@b.test/y']);
    assert.ok(tracker.isAvailable('bob@b.test/phone') && tracker.isAvailable('carol@b.test/desk'), 'still known as available');
    // Later, bob really goes and comes back: told.
    h.handle(unavailable('bob@b.test/phone'));
    h.handle(available('bob@b.test/phone'));
    assert.deepEqual(told.splice(0), ['bob@b.test/phone']);
  });

  it('after the server shut down (<system-shutdown/>), every resource seen again is coming online: their sessions ended too', async () => {
    const { h, told } = await handler();
    h.online();
    h.handle(available('bob@b.test/phone'));
    told.splice(0);
    h.offline(true);
    h.online();
    h.handle(available('bob@b.test/phone'));
    assert.deepEqual(told, ['bob@b.test/phone']);
  });

  it('what was available before the drop counts only for REJOIN_MS after the reconnect', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    const { h, told } = await handler();
    h.online();
    h.handle(available('bob@b.test/phone'));
    told.splice(0);
    h.offline();
    t.mock.timers.tick(5 * 60_000); // a long outage: the window starts at the reconnect, not the drop
    h.online();
    t.mock.timers.tick(REJOIN_MS + 1);
    h.handle(available('bob@b.test/phone'));
    assert.deepEqual(told, ['bob@b.test/phone'], 'after the window, presence is coming online again');
  });
});
