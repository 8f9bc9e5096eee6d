// The end-to-end XEP-0060 suite, run once with Hermod attached to Prosody and once attached to
// ejabberd. Real servers federating over s2s, real clients, the real `hermod` process.
// Users: alice and carol on the home server (the one Hermod is attached to), bob on the other.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import { startXmppEnv, type ServerInfo, type XmppEnv } from '../../src/devenv/servers.ts';
import { SERVICE_FEATURES } from '../../src/xmpp/disco.ts';
import { eventOf, eventually, expectIqError, isItemEvent, OWNER, PASSWORD, PUBSUB, TestClient } from './client.ts';
import { startHermodProcess, type HermodProcess } from './hermod-process.ts';

const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';

const entry = (text: string): string => `<entry xmlns='http://www.w3.org/2005/Atom'><title>${text}</title></entry>`;
const publish = (node: string, id: string | undefined, text: string): string =>
  `<pubsub xmlns='${PUBSUB}'><publish node='${node}'><item${id ? ` id='${id}'` : ''}>${entry(text)}</item></publish></pubsub>`;
const itemIds = (iq: Element): string[] =>
  iq
    .getChild('pubsub', PUBSUB)
    ?.getChild('items')
    ?.getChildren('item')
    .map((i) => i.attrs.id as string) ?? [];
const titleOf = (item: Element | undefined): string | undefined => item?.getChild('entry', 'http://www.w3.org/2005/Atom')?.getChildText('title') ?? undefined;

export function pubsubSuite(kind: 'prosody' | 'ejabberd'): void {
  describe(`Hermod attached to ${kind}`, { timeout: 240_000 }, () => {
    let env: XmppEnv;
    let home: ServerInfo;
    let remote: ServerInfo;
    let dir: string;
    let hermod: HermodProcess;
    let alice: TestClient; // owner, local user of the home server
    let carol: TestClient; // another local user
    let bob: TestClient; // remote user, over s2s
    let SVC: string;
    const clients: TestClient[] = [];

    const connect = async (server: ServerInfo, user: string): Promise<TestClient> => {
      const c = await TestClient.create(env, server, user);
      clients.push(c);
      return c;
    };

    before(async () => {
      dir = await mkdtemp(path.join(tmpdir(), `hermod-e2e-${kind}-`));
      env = await startXmppEnv();
      home = (kind === 'prosody' ? env.alpha : env.beta) as ServerInfo;
      remote = (kind === 'prosody' ? env.beta : env.alpha) as ServerInfo;
      SVC = home.componentJid;
      hermod = await startHermodProcess({ server: home, dir, admins: [`admin@${home.domain}`] });
      [alice, carol, bob] = await Promise.all([connect(home, 'alice'), connect(home, 'carol'), connect(remote, 'bob')]);
    });

    after(async () => {
      await Promise.all(clients.map((c) => c.stop()));
      await hermod?.stop().catch(() => hermod.kill());
      await env?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('answers disco#info with the pubsub/service identity and exactly the implemented features, also over s2s', async () => {
      for (const c of [alice, bob]) {
        const res = await c.iq('get', SVC, `<query xmlns='${DISCO_INFO}'/>`);
        const query = res.getChild('query', DISCO_INFO) as Element;
        const identity = query.getChild('identity');
        assert.equal(identity?.attrs.category, 'pubsub');
        assert.equal(identity?.attrs.type, 'service');
        assert.deepEqual(query.getChildren('feature').map((f) => f.attrs.var).sort(), [...SERVICE_FEATURES].sort());
      }
    });

    it('answers unknown requests with service-unavailable and ping with a result', async () => {
      await expectIqError(alice.iq('get', SVC, `<query xmlns='urn:example:unknown'/>`), 'service-unavailable');
      await alice.iq('get', SVC, `<ping xmlns='urn:xmpp:ping'/>`);
    });

    it('lets a local user create nodes; refuses a remote user, duplicates and missing node ids', async () => {
      await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='news'/></pubsub>`);
      await expectIqError(alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='news'/></pubsub>`), 'conflict');
      await expectIqError(bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='bobs'/></pubsub>`), 'forbidden');
      const instant = await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create/></pubsub>`);
      const instantId = instant.getChild('pubsub', PUBSUB)?.getChild('create')?.attrs.node as string;
      assert.match(instantId, /^[0-9a-f-]{36}$/);
      await expectIqError(alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><publish><item>${entry('x')}</item></publish></pubsub>`), 'bad-request', 'nodeid-required');
      const items = await bob.iq('get', SVC, `<query xmlns='${DISCO_ITEMS}'/>`);
      const nodes = items.getChild('query')?.getChildren('item').map((i) => i.attrs.node);
      assert.ok(nodes?.includes('news') && nodes.includes(instantId), `disco#items lists the nodes: ${String(nodes)}`);
    });

    it('create-and-configure applies the form; disco#info on the node gives pubsub/leaf and the meta-data form', async () => {
      await alice.iq(
        'set',
        SVC,
        `<pubsub xmlns='${PUBSUB}'><create node='configured'/><configure><x xmlns='jabber:x:data' type='submit'>
          <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>
          <field var='pubsub#title'><value>Configured node</value></field>
          <field var='pubsub#max_items'><value>2</value></field>
        </x></configure></pubsub>`,
      );
      const res = await bob.iq('get', SVC, `<query xmlns='${DISCO_INFO}' node='configured'/>`);
      const query = res.getChild('query', DISCO_INFO) as Element;
      assert.equal(query.getChild('identity')?.attrs.type, 'leaf');
      const form = query.getChild('x', 'jabber:x:data');
      const field = (v: string): string[] | undefined =>
        form
          ?.getChildren('field')
          .find((f) => f.attrs.var === v)
          ?.getChildren('value')
          .map((x) => x.getText());
      assert.deepEqual(field('FORM_TYPE'), ['http://jabber.org/protocol/pubsub#meta-data']);
      assert.deepEqual(field('pubsub#title'), ['Configured node']);
      assert.deepEqual(field('pubsub#owner'), [alice.bare]);
      assert.deepEqual(field('pubsub#max_items'), ['2']);
      await expectIqError(bob.iq('get', SVC, `<query xmlns='${DISCO_INFO}' node='no-such-node'/>`), 'item-not-found');
    });

    it('delivers notifications with payload to a local and a remote (s2s) subscriber', async () => {
      for (const c of [bob, carol]) {
        const res = await c.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='news' jid='${c.jid}'/></pubsub>`);
        const sub = res.getChild('pubsub', PUBSUB)?.getChild('subscription');
        assert.equal(sub?.attrs.subscription, 'subscribed');
        assert.equal(sub?.attrs.jid, c.jid);
        assert.ok(sub?.attrs.subid);
      }
      const res = await alice.iq('set', SVC, publish('news', 'first', 'Hello federation'));
      assert.equal(res.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChild('item')?.attrs.id, 'first');
      for (const c of [bob, carol]) {
        const msg = await c.waitForMessage(isItemEvent('news', 'first'), 10_000, 'notification of first');
        assert.equal(msg.attrs.from, SVC);
        const item = eventOf(msg)?.getChild('items')?.getChild('item');
        assert.equal(titleOf(item), 'Hello federation');
        assert.equal(item?.attrs.publisher, alice.bare);
      }
    });

    it('generates item ids, overwrites the same id, and retrieves all, max_items and by id', async () => {
      const res = await alice.iq('set', SVC, publish('news', undefined, 'No id given'));
      const generated = res.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChild('item')?.attrs.id as string;
      assert.ok(generated && generated !== 'first');
      await alice.iq('set', SVC, publish('news', 'first', 'Hello again'));
      const all = await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news'/></pubsub>`);
      assert.deepEqual(itemIds(all), [generated, 'first'], 'overwritten item counts as newest');
      const latest = await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news' max_items='1'/></pubsub>`);
      assert.deepEqual(itemIds(latest), ['first']);
      const byId = await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news'><item id='first'/></items></pubsub>`);
      const item = byId.getChild('pubsub', PUBSUB)?.getChild('items')?.getChild('item');
      assert.equal(titleOf(item), 'Hello again');
      await expectIqError(bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='nope'/></pubsub>`), 'item-not-found');
    });

    it('retract with notify sends a retract event and removes the item', async () => {
      await alice.iq('set', SVC, publish('news', 'doomed', 'Short-lived'));
      await bob.waitForMessage(isItemEvent('news', 'doomed'));
      await expectIqError(bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><retract node='news'><item id='doomed'/></retract></pubsub>`), 'forbidden');
      await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><retract node='news' notify='true'><item id='doomed'/></retract></pubsub>`);
      const msg = await bob.waitForMessage((m) => eventOf(m)?.getChild('items')?.getChild('retract')?.attrs.id === 'doomed', 10_000, 'retract event');
      assert.equal(eventOf(msg)?.getChild('items')?.attrs.node, 'news');
      const all = await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news'/></pubsub>`);
      assert.ok(!itemIds(all).includes('doomed'));
      await expectIqError(alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><retract node='news'><item id='doomed'/></retract></pubsub>`), 'item-not-found');
    });

    it('configure: the owner gets and submits the node_config form; others are forbidden; bad values are not-acceptable', async () => {
      const res = await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><configure node='news'/></pubsub>`);
      const form = res.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x', 'jabber:x:data');
      const vars = form?.getChildren('field').map((f) => f.attrs.var as string) ?? [];
      for (const v of ['pubsub#access_model', 'pubsub#publish_model', 'pubsub#max_items', 'pubsub#persist_items', 'pubsub#deliver_payloads', 'pubsub#notify_retract', 'pubsub#notify_delete', 'pubsub#title', 'pubsub#type']) {
        assert.ok(vars.includes(v), `form has ${v}`);
      }
      await expectIqError(bob.iq('get', SVC, `<pubsub xmlns='${OWNER}'><configure node='news'/></pubsub>`), 'forbidden');
      const submit = (fields: string): string =>
        `<pubsub xmlns='${OWNER}'><configure node='news'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>${fields}</x></configure></pubsub>`;
      const err = await expectIqError(alice.iq('set', SVC, submit(`<field var='pubsub#max_items'><value>lots</value></field>`)), 'not-acceptable');
      assert.match(err.text ?? '', /pubsub#max_items/);
      await alice.iq('set', SVC, submit(`<field var='pubsub#deliver_payloads'><value>0</value></field>`));
      await alice.iq('set', SVC, publish('news', 'quiet', 'Payload stays home'));
      const msg = await bob.waitForMessage(isItemEvent('news', 'quiet'));
      const item = eventOf(msg)?.getChild('items')?.getChild('item');
      assert.equal(item?.getChildElements().length, 0, 'no payload when deliver_payloads is off');
      await alice.iq('set', SVC, submit(`<field var='pubsub#deliver_payloads'><value>1</value></field>`));
    });

    it('whitelist: a non-member is refused with closed-node, a member is accepted, a removed member stops receiving at once', async () => {
      await alice.iq(
        'set',
        SVC,
        `<pubsub xmlns='${PUBSUB}'><create node='private'/><configure><x xmlns='jabber:x:data' type='submit'>
          <field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub>`,
      );
      await expectIqError(bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='private' jid='${bob.jid}'/></pubsub>`), 'not-allowed', 'closed-node');
      await expectIqError(bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='private'/></pubsub>`), 'not-allowed', 'closed-node');
      await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><affiliations node='private'><affiliation jid='${bob.bare}' affiliation='member'/></affiliations></pubsub>`);
      await bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='private' jid='${bob.jid}'/></pubsub>`);
      await alice.iq('set', SVC, publish('private', 'p1', 'For members'));
      await bob.waitForMessage(isItemEvent('private', 'p1'));

      await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><affiliations node='private'><affiliation jid='${bob.bare}' affiliation='none'/></affiliations></pubsub>`);
      const notice = await bob.waitForMessage((m) => eventOf(m)?.getChild('subscription')?.attrs.node === 'private', 10_000, 'subscription removal notice');
      assert.equal(eventOf(notice)?.getChild('subscription')?.attrs.subscription, 'none');
      const owned = await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><subscriptions node='private'/></pubsub>`);
      assert.deepEqual(owned.getChild('pubsub', OWNER)?.getChild('subscriptions')?.getChildren('subscription'), []);
      await alice.iq('set', SVC, publish('private', 'p2', 'Not for bob any more'));
      // Fence: bob is still subscribed to 'news'; notifications travel in order over one s2s stream.
      await alice.iq('set', SVC, publish('news', 'fence-1', 'fence'));
      await bob.waitForMessage(isItemEvent('news', 'fence-1'));
      assert.deepEqual(bob.received(isItemEvent('private', 'p2')), [], 'a removed member gets nothing');
      await expectIqError(bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='private'/></pubsub>`), 'not-allowed', 'closed-node');
    });

    it('entities retrieve their own subscriptions and affiliations; owners manage both', async () => {
      const subs = await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><subscriptions/></pubsub>`);
      const list = subs.getChild('pubsub', PUBSUB)?.getChild('subscriptions')?.getChildren('subscription') ?? [];
      assert.deepEqual(list.map((s) => [s.attrs.node, s.attrs.jid, s.attrs.subscription]), [['news', bob.jid, 'subscribed']]);
      const affs = await alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><affiliations/></pubsub>`);
      const mine = affs.getChild('pubsub', PUBSUB)?.getChild('affiliations')?.getChildren('affiliation').map((a) => [a.attrs.node, a.attrs.affiliation]);
      assert.ok(mine?.some(([n, a]) => n === 'news' && a === 'owner'));
      const owned = await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><subscriptions node='news'/></pubsub>`);
      const jids = owned.getChild('pubsub', OWNER)?.getChild('subscriptions')?.getChildren('subscription').map((s) => s.attrs.jid).sort();
      assert.deepEqual(jids, [bob.jid, carol.jid].sort());
      await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><subscriptions node='news'><subscription jid='${carol.jid}' subscription='none'/></subscriptions></pubsub>`);
      await carol.waitForMessage((m) => eventOf(m)?.getChild('subscription')?.attrs.subscription === 'none', 10_000, 'owner removed subscription notice');
      await expectIqError(carol.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><unsubscribe node='news' jid='${carol.jid}'/></pubsub>`), 'unexpected-request', 'not-subscribed');
      await expectIqError(bob.iq('get', SVC, `<pubsub xmlns='${OWNER}'><affiliations node='news'/></pubsub>`), 'forbidden');
      await expectIqError(bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='news' jid='${carol.jid}'/></pubsub>`), 'bad-request', 'invalid-jid');
    });

    it('purge and delete notify subscribers', async () => {
      await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><purge node='news'/></pubsub>`);
      await bob.waitForMessage((m) => eventOf(m)?.getChild('purge')?.attrs.node === 'news', 10_000, 'purge event');
      const empty = await bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news'/></pubsub>`);
      assert.deepEqual(itemIds(empty), []);
      await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='temp'/></pubsub>`);
      await bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='temp' jid='${bob.jid}'/></pubsub>`);
      await expectIqError(bob.iq('set', SVC, `<pubsub xmlns='${OWNER}'><delete node='temp'/></pubsub>`), 'forbidden');
      await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><delete node='temp'/></pubsub>`);
      await bob.waitForMessage((m) => eventOf(m)?.getChild('delete')?.attrs.node === 'temp', 10_000, 'delete event');
      await expectIqError(bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='temp'/></pubsub>`), 'item-not-found');
    });

    it('items and subscriptions survive a clean restart and a kill -9 right after an acknowledged publish', async () => {
      await alice.iq('set', SVC, publish('news', 'before-restart', 'Durable'));
      await bob.waitForMessage(isItemEvent('news', 'before-restart'));
      assert.equal(await hermod.stop(), 0, 'clean exit on SIGTERM');
      hermod = await startHermodProcess({ server: home, dir, admins: [`admin@${home.domain}`] });
      await eventually(async () => (await alice.iq('get', SVC, `<ping xmlns='urn:xmpp:ping'/>`)) && true, 'hermod answering after restart');
      await alice.iq('set', SVC, publish('news', 'acked', 'Acknowledged then crashed'));
      await hermod.kill();
      hermod = await startHermodProcess({ server: home, dir, admins: [`admin@${home.domain}`] });
      const all = await eventually(
        () => bob.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news'/></pubsub>`),
        'items after kill -9',
      );
      assert.deepEqual(itemIds(all), ['before-restart', 'acked']);
      await alice.iq('set', SVC, publish('news', 'after-crash', 'Still subscribed'));
      await bob.waitForMessage(isItemEvent('news', 'after-crash'), 10_000, 'notification after restart (subscription survived)');
    });

    it('reconnects after the XMPP server restarts and keeps serving', async () => {
      const onlineBefore = (await hermod.log()).filter((l) => l.msg === 'component online').length;
      await env.restart(home);
      await hermod.waitForLog(
        (l) => l.msg === 'component offline',
        'hermod logs the lost connection',
      );
      await eventually(async () => (await hermod.log()).filter((l) => l.msg === 'component online').length > onlineBefore, 'hermod back online', 30_000);
      const alice2 = await TestClient.connect(home, 'alice', PASSWORD, 'again');
      clients.push(alice2);
      await alice2.iq('set', SVC, publish('news', 'after-server-restart', 'Back'));
      await bob.waitForMessage(isItemEvent('news', 'after-server-restart'), 20_000, 'notification after server restart');
    });
  });
}
