// Limits end to end: the real `hermod start` with a small `limits` section on real Prosody, and
// real clients. What a user sees: one node too many is policy-violation (cancel, pubsub#errors
// max-nodes-exceeded); max_items above the cap is not-acceptable naming the limit; the default
// node keeps at most the cap; publishing too fast is policy-violation (wait) saying when to retry,
// and works again after that; subscribers keep getting what was accepted; the admin is limited by
// none of it; the service keeps answering.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventOf, eventually, expectIqError, OWNER, PUBSUB, type TestClient } from './client.ts';
import { create as createNode, itemIds, nodeConfigForm, publish, useSite } from './fixtures.ts';

const LIMITS = { maxItemsPerNode: 5, maxNodesPerOwner: 2, publishRate: { perSecond: 0.2, burst: 5 } };

const create = (node: string, maxItems?: string): string => createNode(node, maxItems === undefined ? undefined : { max_items: maxItems });
const form = (maxItems: string): string => nodeConfigForm({ max_items: maxItems });

describe('limits through a real server', { timeout: 120_000 }, () => {
  const site = useSite({ name: 'limits', ejabberd: false });
  let home: ServerInfo;
  let hermod: HermodProcess | undefined;
  let alice: TestClient;
  let bob: TestClient;
  let admin: TestClient;
  let SVC: string;

  before(async () => {
    home = site.alpha;
    SVC = home.componentJid;
    hermod = await site.hermod({ server: home, admins: [`admin@${home.domain}`], extra: { limits: LIMITS } });
    [alice, bob, admin] = await Promise.all([site.user(home, 'alice'), site.user(home, 'bob'), site.user(home, 'admin')]);
  });

  it('refuses a node more than maxNodesPerOwner with policy-violation/max-nodes-exceeded; the admin is not limited', async () => {
    await alice.iq('set', SVC, create('a1'));
    await alice.iq('set', SVC, create('a2'));
    const err = await expectIqError(alice.iq('set', SVC, create('a3')), 'policy-violation', 'max-nodes-exceeded');
    assert.equal(err.type, 'cancel');
    assert.match(err.text ?? '', /you own 2 nodes, the most this service allows per owner \(2\)/);
    for (const n of ['adm1', 'adm2', 'adm3']) await admin.iq('set', SVC, create(n));
    // Deleting one makes room again.
    await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><delete node='a2'/></pubsub>`);
    await alice.iq('set', SVC, create('a3'));
  });

  it('refuses max_items above maxItemsPerNode (create and configure) with not-acceptable naming the limit', async () => {
    const err = await expectIqError(admin.iq('set', SVC, create('too-big', '6')), 'not-acceptable');
    assert.match(err.text ?? '', /pubsub#max_items 6 is above this service's limit of 5 items per node/);
    await expectIqError(alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><configure node='a1'>${form('100')}</configure></pubsub>`), 'not-acceptable');
    await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><configure node='a1'>${form('5')}</configure></pubsub>`);
  });

  it('refuses publishing faster than the rate with policy-violation (wait), notifies what it accepted, keeps serving, and accepts again later', async () => {
    await bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='a3' jid='${bob.bare}'/></pubsub>`);
    for (let i = 0; i < 5; i++) await alice.iq('set', SVC, publish('a3', `p${i}`));
    const err = await expectIqError(alice.iq('set', SVC, publish('a3', 'p5')), 'policy-violation');
    assert.equal(err.type, 'wait');
    assert.match(err.text ?? '', /publishing too fast: at most 0\.2 per second \(bursts of 5\); retry in \d+ ms/);
    // Another resource of alice shares the account's bucket.
    const laptop = await site.user(home, 'alice', 'laptop');
    try {
      await expectIqError(laptop.iq('set', SVC, publish('a3', 'p5')), 'policy-violation');
    } finally {
      await laptop.stop();
    }
    // The admin is not rate limited, and the node keeps maxItemsPerNode items (default max_items).
    for (let i = 0; i < 12; i++) await admin.iq('set', SVC, publish('a3', `admin${i}`));
    const items = itemIds(await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='a3'/></pubsub>`));
    assert.deepEqual(items.sort(), ['admin10', 'admin11', 'admin7', 'admin8', 'admin9']);
    // Bob was notified of every accepted publication, and never of the refused one.
    await bob.waitForMessage((m) => eventOf(m)?.getChild('items')?.getChild('item')?.attrs.id === 'admin11', 10_000, 'last notification');
    const notified = bob.received((m) => eventOf(m)?.getChild('items')?.attrs.node === 'a3').map((m) => eventOf(m)?.getChild('items')?.getChild('item')?.attrs.id);
    for (let i = 0; i < 5; i++) assert.ok(notified.includes(`p${i}`), `p${i} notified`);
    assert.ok(!notified.includes('p5'), 'the refused publish notified nobody');
    // Still serving other requests.
    await alice.iq('get', SVC, `<ping xmlns='urn:xmpp:ping'/>`);
    // After the wait the server named, alice may publish again.
    await eventually(async () => {
      try {
        return await alice.iq('set', SVC, publish('a3', 'later'));
      } catch (e) {
        if ((e as { condition?: string }).condition !== 'policy-violation') throw e;
        return undefined;
      }
    }, 'publish accepted again after the wait', 20_000);
    await bob.waitForMessage((m) => eventOf(m)?.getChild('items')?.getChild('item')?.attrs.id === 'later', 10_000, 'notification of the later publish');
    assert.equal(process.kill((hermod as HermodProcess).pid, 0), true, 'hermod is up');
  });
});
