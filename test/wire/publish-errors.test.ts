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
