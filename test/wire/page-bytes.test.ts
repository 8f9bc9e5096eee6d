// Item and history pages are cut by bytes (src/xmpp/rsm.ts fitPage): a node of large items
// answers fewer than `max` per page, with RSM saying where to go on, forwards and backwards,
// and every item is reached by paging on (XEP-0059 §2.1: fewer than asked for is allowed).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import { PUBSUB } from '../e2e/client.ts';
import { create, itemIds } from '../e2e/fixtures.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { PAGE_BYTES } from '../../src/xmpp/rsm.ts';
import { useHarnesses } from './harness.ts';

const SVC = 'pubsub.a.example';
const ALICE = 'alice@a.example/desk';
const harness = useHarnesses({ jid: SVC });
const big = (id: string): string => `<entry xmlns='urn:example'>${id}${'x'.repeat(Math.floor(PAGE_BYTES * 0.4))}</entry>`;
const setOf = (parent: Element | undefined) => {
  const set = parent?.getChild('set', NS.RSM);
  return { first: set?.getChildText('first'), index: set?.getChild('first')?.attrs.index, last: set?.getChildText('last'), count: set?.getChildText('count') };
};

describe('pages cut by bytes', () => {
  it('items and history of large items: fewer per page than asked, RSM says where to go on, every item reached', async () => {
    const wire = await harness();
    await wire.ok(ALICE, 'set', create('n', { max_payload_size: '1048576' }));
    const ids = ['a', 'b', 'c', 'd', 'e'];
    for (const id of ids) await wire.ok(ALICE, 'set', `<pubsub xmlns='${PUBSUB}'><publish node='n'><item id='${id}'>${big(id)}</item></publish></pubsub>`);

    // All items, no RSM asked: the first two, and a <set/> saying there are five.
    const all = await wire.ok(ALICE, 'get', `<pubsub xmlns='${PUBSUB}'><items node='n'/></pubsub>`);
    assert.deepEqual(itemIds(all), ['a', 'b']);
    assert.deepEqual(setOf(all.getChild('pubsub', PUBSUB)), { first: 'a', index: '0', last: 'b', count: '5' });
    // Paging on forwards reaches every item; backwards from the end, the last ones first.
    const seen: string[] = [];
    let after: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await wire.ok(ALICE, 'get', `<pubsub xmlns='${PUBSUB}'><items node='n'/><set xmlns='${NS.RSM}'><max>100</max>${after ? `<after>${after}</after>` : ''}</set></pubsub>`);
      const got = itemIds(page);
      if (got.length === 0) break;
      seen.push(...got);
      after = got.at(-1);
    }
    assert.deepEqual(seen, ids);
    const tail = await wire.ok(ALICE, 'get', `<pubsub xmlns='${PUBSUB}'><items node='n'/><set xmlns='${NS.RSM}'><max>100</max><before/></set></pubsub>`);
    assert.deepEqual(itemIds(tail), ['d', 'e']);
    assert.deepEqual(setOf(tail.getChild('pubsub', PUBSUB)), { first: 'd', index: '3', last: 'e', count: '5' });

    // max_items: the newest that fit, and the count noting the cut (§6.5.4).
    const newest = await wire.ok(ALICE, 'get', `<pubsub xmlns='${PUBSUB}'><items node='n' max_items='5'/></pubsub>`);
    assert.deepEqual(itemIds(newest), ['d', 'e']);
    assert.equal(setOf(newest.getChild('pubsub', PUBSUB)).count, '5');

    // The node's history (XEP-0313): the same cut, <fin complete='false'/> until the end.
    const before = wire.messages.length;
    const fin = (await wire.ok(ALICE, 'set', `<query xmlns='${NS.MAM}' node='n' queryid='q1'/>`)).getChild('fin', NS.MAM);
    const results = wire.to(ALICE, before).filter((m) => m.getChild('result', NS.MAM)?.attrs.queryid === 'q1');
    assert.equal(results.length, 2);
    assert.equal(fin?.attrs.complete, 'false');
    assert.equal(setOf(fin).count, '5');
  });
});
