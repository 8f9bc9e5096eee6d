// The pub/sub client a Hermod uses towards its partners (src/xmpp/pubsub-client.ts), on the
// in-process wire harness: one component's IQ caller asks another component's service, as a
// partner's Hermod does — disco, subscribe/unsubscribe, items in RSM pages and by id, and the
// replay of a node's history (XEP-0313), whose results arrive as messages.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parse, type Element } from 'ltx';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { HERMOD_FEATURE } from '../../src/replication/partners.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { PubsubClient } from '../../src/xmpp/pubsub-client.ts';
import { isItemEvent, type TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';

const create = (node: string): string => `<pubsub xmlns='${NS.PUBSUB}'><create node='${node}'/></pubsub>`;
const publish = (node: string, id: string): string =>
  `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>${id}</title></entry></item></publish></pubsub>`;
const retract = (node: string, id: string): string => `<pubsub xmlns='${NS.PUBSUB}'><retract node='${node}' notify='1'><item id='${id}'/></retract></pubsub>`;
const ids = (items: Element[]): string[] => items.map((i) => i.attrs.id as string);
/** What a history entry says: +id for a publication, -id for a retraction. */
const kind = (message: Element): string => {
  const items = message.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
  return items?.getChild('item') ? `+${String(items.getChild('item')?.attrs.id)}` : `-${String(items?.getChild('retract')?.attrs.id)}`;
};

describe('pub/sub client (towards partners)', () => {
  let site: WireHarness;
  let partner: WireHarness;
  let alice: TestClient;
  let client: PubsubClient;
  /** A second client whose history results reach it only after the <fin/> (as through the cluster relay). */
  let late: PubsubClient;
  const held: Element[] = [];
  const events: Element[] = [];
  let SVC: string;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    SVC = site.jid;
    alice = site.client('alice@alpha.test/desk');
    // The partner's component routes MAM results to its client, and keeps event notifications.
    const messages = new Map([
      [NS.MAM, (stanza: Element) => void (client.handleResult(stanza) || held.push(stanza))],
      [NS.PUBSUB_EVENT, (stanza: Element) => void events.push(stanza)],
    ]);
    partner = await WireHarness.start({ jid: 'pubsub.beta.test', network: site.network, messages });
    client = new PubsubClient(partner.core.iq, partner.jid);
    late = new PubsubClient(
      {
        request: async (...args: Parameters<typeof partner.core.iq.request>) => {
          const answer = await partner.core.iq.request(...args);
          // After the <fin/>: the first and last results at once, those between 200 ms later (as
          // when some reach this process directly and some through another one).
          const results = held.splice(0);
          setTimeout(() => {
            for (const stanza of [results[0], results.at(-1)]) if (stanza) late.handleResult(stanza);
          }, 0);
          setTimeout(() => {
            for (const stanza of results.slice(1, -1)) late.handleResult(stanza);
          }, 200);
          return answer;
        },
      },
      partner.jid,
    );
    for (const node of ['n1', 'n2', 'n3', 'n4', 'n5']) await alice.iq('set', SVC, create(node));
    for (const id of ['a', 'b', 'c', 'd', 'e']) await alice.iq('set', SVC, publish('n1', id));
  });
  after(async () => {
    await partner?.stop();
    await site?.stop();
  });

  it('disco#info: the service is a pub/sub service that Hermod recognises, with MAM; an unknown node is item-not-found', async () => {
    const info = await client.info(SVC);
    assert.ok(info.identities.some((i) => i.category === 'pubsub' && i.type === 'service'));
    assert.ok(info.features.includes(HERMOD_FEATURE));
    assert.ok(info.features.includes(NS.MAM));
    assert.ok((await client.info(SVC, 'n1')).identities.some((i) => i.category === 'pubsub' && i.type === 'leaf'));
    await assert.rejects(client.info(SVC, 'nowhere'), (err: unknown) => err instanceof IqError && err.condition === 'item-not-found');
  });

  it('disco#items: one RSM page, and every node read over several pages', async () => {
    const first = await client.items(SVC, { page: { max: 2 } });
    assert.equal(first.entries.length, 2);
    assert.ok(first.entries.every((i) => i.jid === SVC && i.node !== undefined));
    assert.equal(first.last, first.entries[1]?.node);
    assert.deepEqual(await client.nodes(SVC, 2), ['n1', 'n2', 'n3', 'n4', 'n5']);
  });

  it('items in RSM pages (oldest first) and by id (missing ids left out)', async () => {
    const page = await client.itemsPage(SVC, 'n1', { max: 2, after: 'b' });
    assert.deepEqual(ids(page.entries), ['c', 'd']);
    assert.equal(page.last, 'd');
    assert.deepEqual(ids((await client.itemsPage(SVC, 'n1', { max: 2, after: 'd' })).entries), ['e'], 'the last page');
    assert.deepEqual(ids((await client.itemsPage(SVC, 'n1', { max: 2 })).entries), ['a', 'b'], 'the first page');
    assert.deepEqual(ids(await client.itemsById(SVC, 'n1', ['d', 'zz', 'b'])).sort(), ['b', 'd']);
    await assert.rejects(client.itemsPage(SVC, 'nowhere', { max: 2 }), (err: unknown) => err instanceof IqError && err.condition === 'item-not-found');
  });

  it('subscribe brings the notifications; unsubscribe ends them', async () => {
    const subscription = await client.subscribe(SVC, 'n2');
    assert.equal(subscription?.attrs.subscription, 'subscribed');
    assert.equal(subscription?.attrs.jid, partner.jid);
    await alice.iq('set', SVC, publish('n2', 's1'));
    await site.settled();
    await partner.settled();
    assert.equal(events.filter(isItemEvent('n2', 's1')).length, 1);
    await client.unsubscribe(SVC, 'n2');
    await alice.iq('set', SVC, publish('n2', 's2'));
    await site.settled();
    await partner.settled();
    assert.equal(events.filter(isItemEvent('n2', 's2')).length, 0, 'no notification after unsubscribing');
  });

  it("replays a node's history in pages (publications and retractions in order), and finds its end", async () => {
    await alice.iq('set', SVC, publish('n3', 'h1'));
    await alice.iq('set', SVC, publish('n3', 'h2'));
    await alice.iq('set', SVC, retract('n3', 'h1'));
    const end = await client.historyEnd(SVC, 'n3');
    const first = await client.history(SVC, 'n3', { max: 2 });
    assert.deepEqual(first.entries.map((e) => kind(e.message)), ['+h1', '+h2']);
    assert.equal(first.complete, false);
    assert.equal(first.last, first.entries[1]?.id);
    const rest = await client.history(SVC, 'n3', { max: 2, after: first.last as string });
    assert.deepEqual(rest.entries.map((e) => kind(e.message)), ['-h1']);
    assert.equal(rest.complete, true);
    assert.equal(rest.last, end, 'the last entry is the history end');
    assert.equal(await client.historyEnd(SVC, 'n4'), undefined, 'an empty history has no end');
  });

  it('results that arrive after the <fin/> (another process relayed them) are waited for, those between its first and last too: the page is whole', async () => {
    for (const id of ['r1', 'r2', 'r3', 'r4']) await alice.iq('set', SVC, publish('n5', id));
    const page = await late.history(SVC, 'n5', { max: 10 });
    assert.deepEqual(page.entries.map((e) => kind(e.message)).sort(), ['+r1', '+r2', '+r3', '+r4']);
    assert.ok(page.last !== undefined && page.entries.some((e) => e.id === page.last));
  });

  it('a page the service cut by bytes (fewer results than its count implies) is taken once the results it says it sent arrived, not after the whole wait', async () => {
    const big = (id: string): string => `<pubsub xmlns='${NS.PUBSUB}'><publish node='big'><item id='${id}'><entry xmlns='urn:example'>${'x'.repeat(800_000)}</entry></item></publish></pubsub>`;
    await alice.iq('set', SVC, `<pubsub xmlns='${NS.PUBSUB}'><create node='big'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NS.PUBSUB_NODE_CONFIG}</value></field><field var='pubsub#max_payload_size'><value>1048576</value></field></x></configure></pubsub>`);
    for (const id of ['b1', 'b2', 'b3', 'b4', 'b5']) await alice.iq('set', SVC, big(id));
    const started = Date.now();
    const page = await late.history(SVC, 'big', { max: 10 });
    const waited = Date.now() - started;
    assert.equal(page.entries.length, 2, 'two of 800 kB fit in a page');
    assert.equal(page.complete, false);
    assert.ok(waited < 5_000, `taken when its two results were in, not after the 10 s wait for results never sent (${waited} ms)`);
  });

  it('keeps no more results than the page asked for, and each once: a service sending more, or again, does not grow the page', async () => {
    for (const id of ['m1', 'm2']) await alice.iq('set', SVC, publish('n4', id));
    let flooding: PubsubClient | undefined;
    flooding = new PubsubClient(
      {
        request: async (...args: Parameters<typeof partner.core.iq.request>) => {
          const answer = await partner.core.iq.request(...args);
          const queryid = String((args[2] as Element).attrs.queryid);
          const results = held.splice(0);
          const forged = (id: string): Element => parse(`<message from='${SVC}' to='${partner.jid}'><result xmlns='${NS.MAM}' queryid='${queryid}' id='${id}'><forwarded xmlns='${NS.FORWARD}'><message/></forwarded></result></message>`) as Element;
          for (const stanza of [...results, ...results, forged('x1'), forged('x2'), forged('x3')]) assert.equal(flooding?.handleResult(stanza), true, 'taken off the wire');
          return answer;
        },
      } as unknown as typeof partner.core.iq,
      partner.jid,
    );
    const page = await flooding.history(SVC, 'n4', { max: 2 });
    assert.deepEqual(page.entries.map((e) => kind(e.message)).sort(), ['+m1', '+m2']);
  });

  it('takes only results of its own queries under way', async () => {
    const result = parse(`<message from='${SVC}' to='${partner.jid}'><result xmlns='${NS.MAM}' queryid='not-a-query' id='x'><forwarded xmlns='${NS.FORWARD}'><message/></forwarded></result></message>`) as Element;
    assert.equal(client.handleResult(result), false);
    assert.equal(client.handleResult(parse(`<message from='${SVC}'><event xmlns='${NS.PUBSUB_EVENT}'/></message>`) as Element), false);
  });
});
