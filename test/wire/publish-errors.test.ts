// Publish requests against the node's event type (XEP-0060 §4.3) and every error case of
// §7.1.3 on the wire: type, condition and pubsub#errors condition as the XEP names them.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PUBSUB } from '../e2e/client.ts';
import { create, entry as payload, itemIds as idsOf, items } from '../e2e/fixtures.ts';
import type { IqError } from '../../src/xmpp/iq-error.ts';
import { useHarnesses, type WireHarness } from './harness.ts';

const SVC = 'pubsub.a.example';
const ALICE = 'alice@a.example/desk';
const harness = useHarnesses({ jid: SVC });
const publish = (node: string, inner: string): string => `<pubsub xmlns='${PUBSUB}'><publish node='${node}'>${inner}</publish></pubsub>`;
const triple = (e: IqError): [string, string | undefined, string | undefined] => [e.type, e.condition, e.appCondition];

async function withNode(fields: Record<string, string>): Promise<WireHarness> {
  const wire = await harness();
  await wire.ok(ALICE, 'set', create('n', fields));
  return wire;
}

const itemIds = async (wire: WireHarness): Promise<string[]> => idsOf(await wire.ok(ALICE, 'get', items('n')));

describe('publish against the node event type (§4.3, §7.1.3.7)', () => {
  it('persistent payload node: no item is item-required, an empty item payload-required', async () => {
    const wire = await withNode({});
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', ''))), ['modify', 'bad-request', 'item-required']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item id='e'/>`))), ['modify', 'bad-request', 'payload-required']);
  });

  it('persistent notification-only node: the item may be empty or carry a payload', async () => {
    const wire = await withNode({ deliver_payloads: '0' });
    await wire.ok(ALICE, 'set', publish('n', `<item id='empty'/>`));
    await wire.ok(ALICE, 'set', publish('n', `<item id='full'>${payload('kept')}</item>`));
    assert.deepEqual(await itemIds(wire), ['empty', 'full']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', ''))), ['modify', 'bad-request', 'item-required']);
  });

  it('transient payload node: an item without payload (or none) is payload-required', async () => {
    const wire = await withNode({ persist_items: '0' });
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item/>`))), ['modify', 'bad-request', 'payload-required']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', ''))), ['modify', 'bad-request', 'payload-required']);
    await wire.ok(ALICE, 'set', publish('n', `<item>${payload('x')}</item>`));
  });

  it('transient notification-only node: any <item/>, empty or not, is item-forbidden; a publish without one succeeds', async () => {
    const wire = await withNode({ persist_items: '0', deliver_payloads: '0' });
    for (const item of [`<item/>`, `<item id='x'/>`, `<item id='y'>${payload('y')}</item>`]) {
      const err = await wire.error(ALICE, 'set', publish('n', item));
      assert.deepEqual(triple(err), ['modify', 'bad-request', 'item-forbidden'], item);
      assert.match(err.text ?? '', /persist_items.*deliver_payloads/);
    }
    await wire.ok(ALICE, 'set', publish('n', ''));
  });
});

describe('the other error cases of §7.1.3', () => {
  it('forbidden (§7.1.3.1), item-not-found (§7.1.3.3), payload-too-big (§7.1.3.5), invalid-payload (§7.1.3.6)', async () => {
    const wire = await withNode({ max_payload_size: '200' });
    assert.deepEqual(triple(await wire.error('bob@b.example/x', 'set', publish('n', `<item>${payload('x')}</item>`))), ['auth', 'forbidden', undefined]);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('nope', `<item>${payload('x')}</item>`))), ['cancel', 'item-not-found', undefined]);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item>${payload('x'.repeat(300))}</item>`))), ['modify', 'not-acceptable', 'payload-too-big']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item>${payload('a')}${payload('b')}</item>`))), ['modify', 'bad-request', 'invalid-payload']);
  });

  it('node full (§7.1.3.4): publish_node_full=reject refuses a new item with conflict + node-full; the other policies drop the oldest', async () => {
    const wire = await withNode({ max_items: '2', publish_node_full: 'reject' });
    for (const id of ['a', 'b']) await wire.ok(ALICE, 'set', publish('n', `<item id='${id}'>${payload(id)}</item>`));
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item id='c'>${payload('c')}</item>`))), ['cancel', 'conflict', 'node-full']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item>${payload('no id')}</item>`))), ['cancel', 'conflict', 'node-full']);
    await wire.ok(ALICE, 'set', publish('n', `<item id='a'>${payload('a again')}</item>`));
    assert.deepEqual(await itemIds(wire), ['b', 'a'], 'republishing an item is not a new item');

    const discarding = await withNode({ max_items: '2', publish_node_full: 'discard-oldest' });
    for (const id of ['a', 'b', 'c']) await discarding.ok(ALICE, 'set', publish('n', `<item id='${id}'>${payload(id)}</item>`));
    assert.deepEqual(await itemIds(discarding), ['b', 'c']);
  });
});

describe('item ids a request names (§6.5.8, §7.2)', () => {
  const BOB = 'bob@b.example/phone';
  const byId = (ids: string[]): string => `<pubsub xmlns='${PUBSUB}'><items node='n'>${ids.map((id) => `<item id='${id}'/>`).join('')}</items></pubsub>`;
  const retract = (ids: string[]): string => `<pubsub xmlns='${PUBSUB}'><retract node='n' notify='true'>${ids.map((id) => `<item id='${id}'/>`).join('')}</retract></pubsub>`;

  it('an id named twice is answered and retracted once; more than 1000 ids, or an item id longer than 1023 characters, is not-acceptable', async () => {
    const wire = await withNode({});
    for (const id of ['a', 'b']) await wire.ok(ALICE, 'set', publish('n', `<item id='${id}'>${payload(id)}</item>`));
    assert.deepEqual(idsOf(await wire.ok(ALICE, 'get', byId(['a', 'a', 'b', 'a']))).sort(), ['a', 'b'], 'each item once, however often named');
    const tooMany = Array.from({ length: 1001 }, (_, i) => `x${i}`);
    assert.deepEqual(triple(await wire.error(ALICE, 'get', byId(tooMany))).slice(0, 2), ['modify', 'not-acceptable']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', retract(tooMany))).slice(0, 2), ['modify', 'not-acceptable']);
    // A thousand distinct ids (named twice over) are a page: not refused.
    const page = Array.from({ length: 999 }, (_, i) => `x${i}`);
    assert.deepEqual(idsOf(await wire.ok(ALICE, 'get', byId([...page, ...page, 'a']))), ['a']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', publish('n', `<item id='${'i'.repeat(1024)}'>${payload('long')}</item>`))).slice(0, 2), ['modify', 'not-acceptable']);
    await wire.ok(ALICE, 'set', publish('n', `<item id='${'i'.repeat(1023)}'>${payload('longest')}</item>`));
    await wire.ok(ALICE, 'set', retract(['a', 'a']));
    assert.deepEqual(await itemIds(wire), ['b', 'i'.repeat(1023)]);
  });

  it('who may not retract is forbidden (§7.2.3.1) before a node that keeps no items says so', async () => {
    const wire = await withNode({ persist_items: '0', deliver_payloads: '1' });
    assert.deepEqual(triple(await wire.error(BOB, 'set', retract(['a']))).slice(0, 2), ['auth', 'forbidden']);
    assert.deepEqual(triple(await wire.error(ALICE, 'set', retract(['a']))), ['cancel', 'feature-not-implemented', 'unsupported']);
  });
});

describe('max_items beyond one answer (§6.5.4)', () => {
  it('the newest 1000 items, and an XEP-0059 count saying how many the node holds; a smaller max_items needs no note', async () => {
    const wire = await withNode({ max_items: '1100' });
    const published = Array.from({ length: 1002 }, (_, i) => `i${i}`);
    await Promise.all(published.slice(0, 500).map((id) => wire.ok(ALICE, 'set', publish('n', `<item id='${id}'>${payload(id)}</item>`))));
    await Promise.all(published.slice(500).map((id) => wire.ok(ALICE, 'set', publish('n', `<item id='${id}'>${payload(id)}</item>`))));
    const many = await wire.ok(ALICE, 'get', `<pubsub xmlns='${PUBSUB}'><items node='n' max_items='5000'/></pubsub>`);
    assert.equal(idsOf(many).length, 1000);
    assert.equal(many.getChild('pubsub', PUBSUB)?.getChild('set', 'http://jabber.org/protocol/rsm')?.getChildText('count'), '1002', 'the truncation is noted');
    const few = await wire.ok(ALICE, 'get', `<pubsub xmlns='${PUBSUB}'><items node='n' max_items='3'/></pubsub>`);
    assert.equal(idsOf(few).length, 3);
    assert.equal(few.getChild('pubsub', PUBSUB)?.getChild('set', 'http://jabber.org/protocol/rsm'), undefined);
  });
});
