// XEP-0356 privileges granted by the real servers (Prosody's mod_privilege from prosody-modules,
// ejabberd's mod_privilege) through the shipped snippets, the presence and roster access models
// decided on real rosters, presence subscriptions answered by the service, presence-based
// delivery and send_last_published_item on_sub_and_presence; and RSM over a node of 100 000
// items that the real process reads from its LevelDB store. One environment, one Hermod attached
// to each server. (Without privileges: the end of pubsub-suite.ts.)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import type { HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { DEFAULT_NODE_CONFIG } from '../../src/pubsub/node-config.ts';
import { LevelStore } from '../../src/store/level.ts';
import { SERVICE_FEATURES } from '../../src/xmpp/disco.ts';
import { eventOf, eventually, expectIqError, isItemEvent, OWNER, PUBSUB, type TestClient } from './client.ts';
import { configure, create as createConfigured, entry, itemIds, items, publish, subscribe, useSite } from './fixtures.ts';

const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const RSM = 'http://jabber.org/protocol/rsm';
const ROSTER = 'jabber:iq:roster';
const HUGE = 100_000;

const isDelayed = (m: Element): boolean => m.getChild('delay', 'urn:xmpp:delay') !== undefined;
const presenceFrom = (c: TestClient, from: string, type: string): Element | undefined => c.presences.find((p) => p.attrs.from === from && p.attrs.type === type);

/** The roster item of `contact` in `owner`'s roster, as the owner's own client reads it. */
async function rosterItem(owner: TestClient, contact: string): Promise<Element | undefined> {
  const res = await owner.iq('get', owner.bare, `<query xmlns='${ROSTER}'/>`);
  return res
    .getChild('query', ROSTER)
    ?.getChildren('item')
    .find((i) => i.attrs.jid === contact);
}

describe('XEP-0356 privileges, presence and roster access models, presence-based delivery', { timeout: 240_000 }, () => {
  const site = useSite({ name: 'e2e-privilege', privileges: true });
  /** Node ids and item ids of the 100 000-item node, in publication order (filled before Hermod starts). */
  const huge: string[] = [];

  before(async () => {
    // The 100 000-item node is written through the store API into the LevelDB store that the
    // Prosody-attached Hermod then opens (publishing that many over XMPP would take minutes).
    const alpha = site.alpha;
    const store = new LevelStore(path.join(site.dir, 'alpha-data', 'store'));
    await store.open();
    await store.putNode({ id: 'huge', config: { ...DEFAULT_NODE_CONFIG }, creator: `alice@${alpha.domain}`, created: Date.now() });
    await store.setAffiliation('huge', `alice@${alpha.domain}`, 'owner');
    const t0 = Date.now();
    for (let n = 0; n < HUGE; n += 1000) {
      // Random prefixes: id order is not publication order. One batch of 1000 at a time, in order.
      const batch = Array.from({ length: 1000 }, (_, k) => `${randomBytes(3).toString('hex')}-${n + k}`);
      for (const id of batch) await store.putItem('huge', { id, payload: entry(id), publisher: `alice@${alpha.domain}`, published: t0 + n }, HUGE);
      huge.push(...batch);
    }
    await store.close();
    for (const server of [site.alpha, site.beta]) await site.hermod({ server, name: server === site.alpha ? 'alpha' : 'beta' });
  });

  for (const kind of ['prosody', 'ejabberd'] as const) {
    describe(`Hermod attached to ${kind}`, () => {
      let home: ServerInfo;
      let other: ServerInfo;
      let SVC: string;
      let hermod: HermodProcess;
      let alice: TestClient; // node owner
      let carol: TestClient; // alice's contact: group "friends", subscribed to alice's presence
      let dave: TestClient; // alice's contact: group "others", no presence subscription
      let bob: TestClient; // on the other server

      const connect = async (server: ServerInfo, user: string, resource?: string): Promise<TestClient> => {
        return site.user(server, user, resource);
      };

      before(async () => {
        home = kind === 'prosody' ? site.alpha : site.beta;
        other = kind === 'prosody' ? site.beta : site.alpha;
        SVC = home.componentJid;
        hermod = site.hermods[kind === 'prosody' ? 0 : 1] as HermodProcess;
        [alice, carol, dave, bob] = await Promise.all([connect(home, 'alice'), connect(home, 'carol'), connect(home, 'dave'), connect(other, 'bob')]);
        // alice's roster, set by her own client: carol in "friends", dave in "others"...
        await alice.iq('set', alice.bare, `<query xmlns='${ROSTER}'><item jid='${carol.bare}'><group>friends</group></item></query>`);
        await alice.iq('set', alice.bare, `<query xmlns='${ROSTER}'><item jid='${dave.bare}'><group>others</group></item></query>`);
        // ...and carol subscribes to alice's presence, alice approves: alice's item for carol is "from".
        await carol.send(`<presence type='subscribe' to='${alice.bare}'/>`);
        await eventually(() => presenceFrom(alice, carol.bare, 'subscribe'), 'the subscription request at alice');
        await alice.send(`<presence type='subscribed' to='${carol.bare}'/>`);
        await eventually(async () => (await rosterItem(alice, carol.bare))?.attrs.subscription === 'from', "carol's subscription to alice's presence");
        assert.equal((await rosterItem(alice, dave.bare))?.attrs.subscription, 'none');
      });

      it('the server grants roster and presence privileges; disco#info then lists access-presence and access-roster', async () => {
        const granted = await hermod.waitForLog((l) => l.msg === 'XEP-0356 privileges granted', 'privilege advertisement');
        assert.equal(granted.from, home.domain);
        assert.equal(granted.namespace, kind === 'prosody' ? 'urn:xmpp:privilege:2' : 'urn:xmpp:privilege:1');
        assert.deepEqual([granted.roster, granted.presence], ['get', 'roster']);
        const res = await bob.iq('get', SVC, `<query xmlns='${DISCO_INFO}'/>`);
        const features = res.getChild('query', DISCO_INFO)?.getChildren('feature').map((f) => f.attrs.var as string) ?? [];
        assert.deepEqual(features.sort(), [...SERVICE_FEATURES, `${PUBSUB}#access-presence`, `${PUBSUB}#access-roster`].sort());
      });

      it('roster model: a contact in an allowed group subscribes and reads items; one in another group is not-in-roster-group', async () => {
        await alice.iq('set', SVC, createConfigured('club', { access_model: 'roster', roster_groups_allowed: ['friends', 'family'] }));
        await alice.iq('set', SVC, publish('club', 'welcome'));
        const form = await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><configure node='club'/></pubsub>`);
        const groups = form
          .getChild('pubsub', OWNER)
          ?.getChild('configure')
          ?.getChild('x', 'jabber:x:data')
          ?.getChildren('field')
          .find((f) => f.attrs.var === 'pubsub#roster_groups_allowed');
        assert.deepEqual(groups?.getChildren('value').map((v) => v.getText()), ['friends', 'family']);
        const models = form.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x', 'jabber:x:data')?.getChildren('field').find((f) => f.attrs.var === 'pubsub#access_model');
        assert.deepEqual(models?.getChildren('option').map((o) => o.getChildText('value')), ['open', 'authorize', 'whitelist', 'presence', 'roster'], 'the form offers the models the privilege allows');
        const sub = await carol.iq('set', SVC, subscribe('club', carol.jid));
        assert.equal(sub.getChild('pubsub', PUBSUB)?.getChild('subscription')?.attrs.subscription, 'subscribed');
        assert.deepEqual(itemIds(await carol.iq('get', SVC, items('club'))), ['welcome']);
        await expectIqError(dave.iq('set', SVC, subscribe('club', dave.jid)), 'not-authorized', 'not-in-roster-group');
        await expectIqError(dave.iq('get', SVC, items('club')), 'not-authorized', 'not-in-roster-group');
        await expectIqError(bob.iq('set', SVC, subscribe('club', bob.jid)), 'not-authorized', 'not-in-roster-group');
        // Narrowing the groups ends carol's subscription (she is told).
        await alice.iq('set', SVC, configure('club', { roster_groups_allowed: ['family'] }));
        await carol.waitForMessage((m) => eventOf(m)?.getChild('subscription')?.attrs.node === 'club' && eventOf(m)?.getChild('subscription')?.attrs.subscription === 'none', 10_000, 'end of subscription');
      });

      it('presence model: a contact subscribed to the owner\'s presence subscribes; one without is presence-subscription-required', async () => {
        await alice.iq('set', SVC, createConfigured('status', { access_model: 'presence' }));
        await alice.iq('set', SVC, publish('status', 'lunch'));
        await carol.iq('set', SVC, subscribe('status', carol.jid));
        await alice.iq('set', SVC, publish('status', 'back'));
        await carol.waitForMessage(isItemEvent('status', 'back'), 10_000, 'notification on the presence node');
        await expectIqError(dave.iq('set', SVC, subscribe('status', dave.jid)), 'not-authorized', 'presence-subscription-required');
        await expectIqError(dave.iq('get', SVC, items('status')), 'not-authorized', 'presence-subscription-required');
      });

      it('refuses the roster models when an owner is on another server (no privilege covers its roster), naming it', async () => {
        await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='shared'/></pubsub>`);
        await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><affiliations node='shared'><affiliation jid='${bob.bare}' affiliation='owner'/></affiliations></pubsub>`);
        const err = await expectIqError(alice.iq('set', SVC, configure('shared', { access_model: 'roster' })), 'not-acceptable');
        assert.match(err.text ?? '', new RegExp(`XEP-0356.*${bob.bare.replace(/\./g, '\\.')}`));
        const cfg = await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><configure node='shared'/></pubsub>`);
        const model = cfg.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x')?.getChildren('field').find((f) => f.attrs.var === 'pubsub#access_model');
        assert.equal(model?.getChildText('value'), 'open', 'nothing changed');
      });

      it('answers presence subscriptions; presence_based_delivery notifies only subscribers it knows to be available; on_sub_and_presence sends the last item when one becomes available', async () => {
        await alice.iq('set', SVC, createConfigured('live', { presence_based_delivery: '1', send_last_published_item: 'on_sub_and_presence' }));
        await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='control'/></pubsub>`);
        await bob.iq('set', SVC, subscribe('live', bob.bare));
        await bob.iq('set', SVC, subscribe('control', bob.bare));
        // bob is online, but nothing tells Hermod so (no presence subscription, on no local roster).
        await alice.iq('set', SVC, publish('live', 'live-1'));
        await alice.iq('set', SVC, publish('control', 'control-1'));
        await bob.waitForMessage(isItemEvent('control', 'control-1'), 15_000, 'the control notification');
        assert.equal(bob.received(isItemEvent('live')).length, 0, 'no notification to a subscriber not known to be available');
        // bob subscribes to the service's presence: approved (bob's roster says so; Prosody shows
        // the approval as a roster push only), and a subscription request back.
        await bob.send(`<presence type='subscribe' to='${SVC}'/>`);
        await eventually(async () => ['to', 'both'].includes(String((await rosterItem(bob, SVC))?.attrs.subscription)) && presenceFrom(bob, SVC, 'subscribe'), 'approval and subscribe from the service', 15_000);
        await bob.send(`<presence type='subscribed' to='${SVC}'/>`); // bob's server now sends his presence
        const last = await bob.waitForMessage(isItemEvent('live', 'live-1'), 15_000, 'the last item when bob became available');
        assert.ok(isDelayed(last), 'stamped with XEP-0203 delay');
        assert.equal(last.attrs.to, bob.jid, 'to the resource that became available');
        await alice.iq('set', SVC, publish('live', 'live-2'));
        await bob.waitForMessage(isItemEvent('live', 'live-2'), 15_000, 'a notification now that bob is available');
        // A probe is answered with the service's presence.
        await bob.send(`<presence type='probe' to='${SVC}'/>`);
        await eventually(() => bob.presences.find((p) => p.attrs.from === SVC && p.attrs.type === undefined), 'available presence of the service');
      });

      it('with the presence privilege, a local subscriber logging in with another resource gets the last item (on_sub_and_presence)', async () => {
        await alice.iq('set', SVC, createConfigured('news', { send_last_published_item: 'on_sub_and_presence' }));
        await alice.iq('set', SVC, publish('news', 'headline'));
        await dave.iq('set', SVC, subscribe('news', dave.bare));
        await dave.waitForMessage(isItemEvent('news', 'headline'), 10_000, 'the last item on subscription');
        const phone = await site.user(home, 'dave', 'phone');
        const got = await phone.waitForMessage(isItemEvent('news', 'headline'), 15_000, 'the last item at the new resource');
        assert.ok(isDelayed(got));
        assert.equal(got.attrs.to, phone.jid);
      });
    });
  }

  it(`RSM over a node of ${HUGE} items: count, pages forwards and backwards, by index, stable publication order`, { timeout: 120_000 }, async () => {
    const alpha = site.alpha;
    const reader = await site.user(alpha, 'reader');
    const page = async (set: string): Promise<{ ids: string[]; first?: string; index?: number; last?: string; count?: number }> => {
      const res = await reader.iq('get', alpha.componentJid, `<pubsub xmlns='${PUBSUB}'><items node='huge'/><set xmlns='${RSM}'>${set}</set></pubsub>`, 30_000);
      const rsm = res.getChild('pubsub', PUBSUB)?.getChild('set', RSM);
      const first = rsm?.getChild('first');
      return {
        ids: itemIds(res),
        ...(first ? { first: first.getText(), index: Number(first.attrs.index) } : {}),
        ...(rsm?.getChild('last') ? { last: rsm.getChildText('last') as string } : {}),
        ...(rsm?.getChild('count') ? { count: Number(rsm.getChildText('count')) } : {}),
      };
    };
    assert.deepEqual(await page('<max>0</max>'), { ids: [], count: HUGE });
    const forward: string[] = [];
    let after = '';
    for (let guard = 0; guard < HUGE / 1000 + 2; guard++) {
      const p = await page(`<max>1000</max>${after ? `<after>${after}</after>` : ''}`);
      assert.equal(p.count, HUGE);
      if (p.ids.length === 0) break;
      assert.deepEqual([p.index, p.first, p.last], [forward.length, p.ids[0], p.ids.at(-1)]);
      forward.push(...p.ids);
      after = p.last as string;
    }
    assert.equal(forward.length, HUGE);
    assert.deepEqual(forward, huge, 'publication order, every item once');
    const tail = await page('<max>250</max><before/>');
    assert.deepEqual([tail.ids, tail.index], [huge.slice(-250), HUGE - 250]);
    const before = await page(`<max>250</max><before>${huge[50_000]}</before>`);
    assert.deepEqual([before.ids, before.index], [huge.slice(49_750, 50_000), 49_750]);
    const byIndex = await page('<max>7</max><index>77777</index>');
    assert.deepEqual([byIndex.ids, byIndex.index, byIndex.count], [huge.slice(77_777, 77_784), 77_777, HUGE]);
    const end = await page(`<max>10</max><after>${huge[HUGE - 3]}</after>`);
    assert.deepEqual([end.ids, end.index], [huge.slice(-2), HUGE - 2]);
    // The same order the next time: nothing depends on the request.
    assert.deepEqual((await page('<max>1000</max><index>31000</index>')).ids, huge.slice(31_000, 32_000));
  });
});
