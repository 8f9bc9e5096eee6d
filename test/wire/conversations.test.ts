// Scripted conversations on the in-process wire harness, written like the XEPs' examples: given
// this stanza from this JID, expect that reply and those notifications. Disco (XEP-0030 with
// XEP-0060 §5), data forms (XEP-0004 in configuration and MAM), MAM on nodes (XEP-0313 with
// XEP-0059 paging), and one component reaching another over the network as a partner would.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Element } from 'ltx';
import { expectIqError, isItemEvent, OWNER, PUBSUB, type TestClient } from '../e2e/client.ts';
import { create, fieldsOf, MAM, mamForm, publish } from '../e2e/fixtures.ts';
import { WireHarness } from './harness.ts';

const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';
const RSM = 'http://jabber.org/protocol/rsm';
const DATA = 'jabber:x:data';

const retract = (node: string, id: string): string => `<pubsub xmlns='${PUBSUB}'><retract node='${node}' notify='1'><item id='${id}'/></retract></pubsub>`;

/** Runs a MAM query on `node` and collects the result messages that arrive before its <fin/>. */
async function mam(client: TestClient, svc: string, node: string, queryid: string, inner = ''): Promise<{ ids: string[]; kinds: string[]; fin: Element }> {
  const before = client.messages.length;
  const res = await client.iq('set', svc, `<query xmlns='${MAM}' node='${node}' queryid='${queryid}'>${inner}</query>`);
  const results = client.messages.slice(before).map((m) => m.getChild('result', MAM)).filter((r): r is Element => r?.attrs.queryid === queryid);
  const kinds = results.map((r) => {
    const items = r.getChild('forwarded', 'urn:xmpp:forward:0')?.getChild('message')?.getChild('event', `${PUBSUB}#event`)?.getChild('items');
    return items?.getChild('item') ? `+${items.getChild('item')?.attrs.id as string}` : `-${items?.getChild('retract')?.attrs.id as string}`;
  });
  return { ids: results.map((r) => r.attrs.id as string), kinds, fin: res.getChild('fin', MAM) as Element };
}

describe('wire conversations', () => {
  let site: WireHarness;
  let alice: TestClient;
  let bob: TestClient;
  let SVC: string;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    SVC = site.jid;
    alice = site.client('alice@alpha.test/desk');
    bob = site.client('bob@beta.test/phone');
  });
  after(() => site?.stop());

  describe('disco (XEP-0030, XEP-0060 §5)', () => {
    it('disco#info on a node that does not exist is item-not-found', async () => {
      await expectIqError(bob.iq('get', SVC, `<query xmlns='${DISCO_INFO}' node='nowhere'/>`), 'item-not-found');
    });

    it('disco#items on a node lists its item ids (§5.5), paged with RSM', async () => {
      await alice.iq('set', SVC, create('disco'));
      for (const id of ['a', 'b', 'c']) await alice.iq('set', SVC, publish('disco', id));
      const all = await bob.iq('get', SVC, `<query xmlns='${DISCO_ITEMS}' node='disco'/>`);
      const names = all.getChild('query', DISCO_ITEMS)?.getChildren('item').map((i) => [i.attrs.jid, i.attrs.name]);
      assert.deepEqual(names?.map(([, n]) => n).sort(), ['a', 'b', 'c']);
      assert.ok(names?.every(([jid]) => jid === SVC), 'each item names the service');
      const page = await bob.iq('get', SVC, `<query xmlns='${DISCO_ITEMS}' node='disco'><set xmlns='${RSM}'><max>2</max></set></query>`);
      const query = page.getChild('query', DISCO_ITEMS);
      assert.equal(query?.getChildren('item').length, 2);
      assert.equal(query?.getChild('set', RSM)?.getChildText('count'), '3');
    });
  });

  describe('data forms (XEP-0004)', () => {
    it('the configuration form is a form of FORM_TYPE node_config; a submitted form of another type is refused', async () => {
      const got = await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><configure node='disco'/></pubsub>`);
      const x = got.getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x', DATA);
      assert.equal(x?.attrs.type, 'form');
      assert.deepEqual(fieldsOf(x).get('FORM_TYPE'), [`${PUBSUB}#node_config`]);
      const wrongType = `<pubsub xmlns='${OWNER}'><configure node='disco'><x xmlns='${DATA}' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:example:other</value></field><field var='pubsub#title'><value>t</value></field></x></configure></pubsub>`;
      const err = await expectIqError(alice.iq('set', SVC, wrongType), 'not-acceptable'); // §8.2.4: an invalid configuration form
      assert.match(err.text ?? '', /FORM_TYPE/);
      const title = fieldsOf((await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><configure node='disco'/></pubsub>`)).getChild('pubsub', OWNER)?.getChild('configure')?.getChild('x', DATA)).get('pubsub#title');
      assert.notDeepEqual(title, ['t'], 'nothing of the refused form was applied');
    });

    it('MAM offers its query form with the filters it supports (XEP-0313 §5)', async () => {
      const res = await bob.iq('get', SVC, `<query xmlns='${MAM}'/>`);
      const fields = fieldsOf(res.getChild('query', MAM)?.getChild('x', DATA));
      assert.deepEqual(fields.get('FORM_TYPE'), [MAM]);
      for (const name of ['start', 'end', 'after-id', 'before-id', 'ids']) assert.ok(fields.has(name), name);
    });
  });

  describe('MAM on a node (XEP-0313, XEP-0059)', () => {
    before(async () => {
      await alice.iq('set', SVC, create('log'));
      for (const id of ['m1', 'm2', 'm3', 'm4']) await alice.iq('set', SVC, publish('log', id));
      await alice.iq('set', SVC, retract('log', 'm2'));
    });

    it('replays publications and retractions in order, paged forwards and backwards', async () => {
      const all = await mam(bob, SVC, 'log', 'all');
      assert.deepEqual(all.kinds, ['+m1', '+m2', '+m3', '+m4', '-m2']);
      assert.equal(all.fin.attrs.complete, 'true');
      const first = await mam(bob, SVC, 'log', 'p1', `<set xmlns='${RSM}'><max>2</max></set>`);
      assert.deepEqual(first.kinds, ['+m1', '+m2']);
      assert.equal(first.fin.attrs.complete, 'false');
      const next = await mam(bob, SVC, 'log', 'p2', `<set xmlns='${RSM}'><max>2</max><after>${first.ids[1] as string}</after></set>`);
      assert.deepEqual(next.kinds, ['+m3', '+m4']);
      const last = await mam(bob, SVC, 'log', 'p3', `<set xmlns='${RSM}'><max>2</max><before/></set>`);
      assert.deepEqual(last.kinds, ['+m4', '-m2'], 'the last page');
      assert.equal(last.fin.getChild('set', RSM)?.getChildText('count'), '5');
    });

    it('filters by after-id and by time; refuses a bad date and a filter it does not support, saying which', async () => {
      const all = await mam(bob, SVC, 'log', 'ids');
      const after = await mam(bob, SVC, 'log', 'after', mamForm({ 'after-id': all.ids[2] as string }));
      assert.deepEqual(after.kinds, ['+m4', '-m2']);
      const future = await mam(bob, SVC, 'log', 'future', mamForm({ start: '2999-01-01T00:00:00Z' }));
      assert.deepEqual(future.kinds, []);
      assert.equal(future.fin.attrs.complete, 'true');
      const past = await mam(bob, SVC, 'log', 'past', mamForm({ end: '2000-01-01T00:00:00Z' }));
      assert.deepEqual(past.kinds, []);
      const bad = await expectIqError(bob.iq('set', SVC, `<query xmlns='${MAM}' node='log'>${mamForm({ start: 'yesterday' })}</query>`), 'bad-request');
      assert.match(bad.text ?? '', /start/);
      const unsupported = await expectIqError(bob.iq('set', SVC, `<query xmlns='${MAM}' node='log'>${mamForm({ with: 'alice@alpha.test' })}</query>`), 'feature-not-implemented');
      assert.match(unsupported.text ?? '', /with/);
      // The ids filter: an id named twice answers once; more than 1000 ids is not-acceptable.
      const twice = await mam(bob, SVC, 'log', 'twice', mamForm({ ids: [all.ids[0] as string, all.ids[0] as string, all.ids[1] as string] }));
      assert.deepEqual(twice.ids, all.ids.slice(0, 2));
      const many = await expectIqError(bob.iq('set', SVC, `<query xmlns='${MAM}' node='log'>${mamForm({ ids: Array.from({ length: 1001 }, (_, i) => `x${i}`) })}</query>`), 'not-acceptable');
      assert.match(many.text ?? '', /at most 1000/);
    });

    it('a query without a node is item-not-found: this service archives nodes only', async () => {
      await expectIqError(bob.iq('set', SVC, `<query xmlns='${MAM}' queryid='x'/>`), 'item-not-found');
    });
  });

  describe('two services on one network', () => {
    let other: WireHarness;
    const events: Element[] = [];
    before(async () => {
      // The other service takes pub/sub event messages as replication does (a message route).
      other = await WireHarness.start({ jid: 'pubsub.beta.test', network: site.network, messages: new Map([[`${PUBSUB}#event`, (stanza: Element) => void events.push(stanza)]]) });
    });
    after(() => other?.stop());

    it("a component's own requests reach another component, and its subscription brings the notifications (as a partner's)", async () => {
      await alice.iq('set', SVC, create('shared'));
      // As a partner's Hermod does, through the component's own IQ caller.
      const info = await other.core.iq.request(SVC, 'get', new Element('query', { xmlns: DISCO_INFO }));
      assert.ok(info.getChild('query', DISCO_INFO)?.getChildren('feature').some((f) => f.attrs.var === 'urn:hermod:replication:0'), 'Hermod recognises Hermod');
      const subscribed = await other.core.iq.request(SVC, 'set', new Element('pubsub', { xmlns: PUBSUB }).c('subscribe', { node: 'shared', jid: other.jid }).up());
      assert.equal(subscribed.getChild('pubsub', PUBSUB)?.getChild('subscription')?.attrs.subscription, 'subscribed');
      await alice.iq('set', SVC, publish('shared', 's1'));
      await site.settled();
      await other.settled();
      assert.deepEqual(events.filter(isItemEvent('shared', 's1')).map((m) => m.attrs.from), [SVC], 'the notification reached the other component, from the service');
      assert.deepEqual(site.undelivered.filter(isItemEvent('shared')), [], 'and nobody else was addressed');
    });
  });
});
