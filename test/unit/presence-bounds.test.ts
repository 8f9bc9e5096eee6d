// What presence from anyone may make the component keep (src/xmpp/presence.ts): contacts per
// domain (a subscription beyond is declined with `unsubscribed`, the contacts kept stay),
// resources per bare JID (the oldest forgotten), and the store writes of subscribe/unsubscribe
// churn merged per JID.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Element, parse } from 'ltx';
import type { StateOp } from '../../src/store/store.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { CONTACTS_SPACE, MAX_CONTACTS_PER_DOMAIN, MAX_RESOURCES_PER_JID, PresenceHandler, PresenceTracker } from '../../src/xmpp/presence.ts';
import { captureLog } from './capture-log.ts';

const SVC = 'pubsub.a.test';
const presence = (from: string, type?: string): Element => parse(`<presence from='${from}' to='${SVC}'${type ? ` type='${type}'` : ''}/>`) as Element;

async function handler() {
  const store = new MemoryStore();
  await store.open();
  const space = store.state(CONTACTS_SPACE);
  const batches: StateOp[][] = [];
  let hold: Promise<void> | undefined;
  const watched = { ...space, get: (k: string) => space.get(k), getMany: (k: string[]) => space.getMany(k), range: (p: string) => space.range(p), swap: space.swap.bind(space), batch: async (ops: StateOp[]) => {
    batches.push(ops);
    await hold;
    return space.batch(ops);
  } };
  const sent: Element[] = [];
  const tracker = new PresenceTracker();
  const log = captureLog();
  const h = new PresenceHandler({ jid: SVC, space: watched, dataDir: '/nonexistent', send: (s) => { sent.push(s); return true; }, tracker, onAvailable: () => undefined, log, localDomains: new Set(['a.test']) });
  await h.load();
  return { h, sent, tracker, log, space, batches, holdWrites: (p: Promise<void> | undefined) => (hold = p) };
}

describe('presence bounds', () => {
  it(`at most ${MAX_CONTACTS_PER_DOMAIN} contacts from one domain: one more is declined with unsubscribed, one warning; the others and other domains are unaffected`, async () => {
    const { h, sent, log } = await handler();
    for (let i = 0; i < MAX_CONTACTS_PER_DOMAIN; i++) h.handle(presence(`u${i}@flood.test/r`, 'subscribe'));
    sent.length = 0;
    h.handle(presence('late@flood.test/r', 'subscribe'));
    h.handle(presence('later@flood.test/r', 'subscribe'));
    assert.deepEqual(sent.map((s) => `${s.attrs.to} ${s.attrs.type}`), ['late@flood.test unsubscribed', 'later@flood.test unsubscribed']);
    assert.equal(log.lines.filter((l) => /declined/.test(l.msg)).length, 1, 'one warning for the burst');
    assert.ok(!h.contactList.includes('late@flood.test'));
    // A contact already kept subscribes again: still accepted; another domain too.
    sent.length = 0;
    h.handle(presence('u0@flood.test/r', 'subscribe'));
    h.handle(presence('bob@b.test/r', 'subscribe'));
    assert.deepEqual(sent.filter((s) => s.attrs.type === 'subscribed').map((s) => s.attrs.to), ['u0@flood.test', 'bob@b.test']);
    // One leaves: room for one more from that domain.
    h.handle(presence('u1@flood.test/r', 'unsubscribe'));
    sent.length = 0;
    h.handle(presence('late@flood.test/r', 'subscribe'));
    assert.ok(sent.some((s) => s.attrs.type === 'subscribed' && s.attrs.to === 'late@flood.test'));
    // The attached server's own users are not bound per domain.
    for (let i = 0; i <= MAX_CONTACTS_PER_DOMAIN; i++) h.handle(presence(`user${i}@a.test/r`, 'subscribe'));
    assert.ok(h.contactList.includes(`user${MAX_CONTACTS_PER_DOMAIN}@a.test`));
  });

  it(`at most ${MAX_RESOURCES_PER_JID} available resources per bare JID: the one whose presence came longest ago is forgotten`, async () => {
    const { h, tracker } = await handler();
    for (let i = 0; i < MAX_RESOURCES_PER_JID; i++) h.handle(presence(`bob@b.test/r${i}`));
    h.handle(presence('bob@b.test/r0')); // r0 again (a status change): the newest now
    h.handle(presence(`bob@b.test/r${MAX_RESOURCES_PER_JID}`));
    assert.equal(tracker.size, MAX_RESOURCES_PER_JID);
    assert.ok(tracker.isAvailable('bob@b.test/r0') && !tracker.isAvailable('bob@b.test/r1') && tracker.isAvailable(`bob@b.test/r${MAX_RESOURCES_PER_JID}`), 'r1, silent longest, is forgotten');
    h.handle(presence('bob@b.test', 'unavailable'));
    assert.equal(tracker.size, 0);
  });

  it('subscribe/unsubscribe churn while the store is slow: the writes waiting are merged per JID, the last word stored', async () => {
    const { h, space, batches, holdWrites } = await handler();
    let release!: () => void;
    holdWrites(new Promise<void>((r) => (release = r)));
    h.handle(presence('first@b.test/r', 'subscribe')); // its write is under way, held
    for (let i = 0; i < 500; i++) {
      h.handle(presence('churn@b.test/r', 'subscribe'));
      h.handle(presence('churn@b.test/r', 'unsubscribe'));
    }
    h.handle(presence('kept@b.test/r', 'subscribe'));
    release();
    holdWrites(undefined);
    for (let i = 0; i < 50 && (await space.get('kept@b.test')) === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(batches.length, 2, 'the held write, then one batch of what waited');
    assert.deepEqual(batches[1]?.map((op) => `${op.type} ${op.key}`), ['del churn@b.test', 'put kept@b.test']);
    assert.equal(await space.get('churn@b.test'), undefined);
    assert.equal(await space.get('first@b.test'), '1');
    // close() waits for what is still to be written.
    h.handle(presence('last@b.test/r', 'subscribe'));
    await h.close();
    assert.equal(await space.get('last@b.test'), '1');
  });
});
