// What each notification carries on the wire, kind by kind, with and without payloads, as
// XEP-0060 shows it: items (§7.1.2.1-2, §4.3), retract (§7.2.2.1), purge (§8.5.2), delete with
// redirect (§8.4.2), configuration (§8.2.5.3), subscription (§8.8.4, notify_sub), the message
// type (pubsub#notification_type) and SHIM SubID headers (§12.16).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import { NODE_CONFIG } from '../fixtures/node-config-registry.ts';
import { eventOf, OWNER as OWNER_NS, PUBSUB } from '../e2e/client.ts';
import { configure, entry, fieldsOf, subscribe as subscribeTo, subscribeOptionsForm } from '../e2e/fixtures.ts';
import { useHarnesses, type WireHarness } from './harness.ts';

const ALICE = 'alice@a.example/desk';
const BOB = 'bob@b.example/phone';
const harness = useHarnesses({ jid: 'pubsub.a.example' });
const publish = (node: string, item: string): string => `<pubsub xmlns='${PUBSUB}'><publish node='${node}'>${item}</publish></pubsub>`;
const subscribe = (node: string, jid = BOB): string => subscribeTo(node, jid);

/** A node `node` created by alice with these fields, bob subscribed; resolves to the harness. */
async function nodeWith(fields: Record<string, string>, node = 'n'): Promise<WireHarness> {
  const wire = await harness();
  await wire.ok(ALICE, 'set', `<pubsub xmlns='${PUBSUB}'><create node='${node}'/></pubsub>`);
  if (Object.keys(fields).length > 0) await wire.ok(ALICE, 'set', configure(node, fields));
  await wire.ok(BOB, 'set', subscribe(node));
  wire.messages.length = 0;
  return wire;
}

/** The one notification bob got; its <event/>'s only child. */
function onlyEvent(wire: WireHarness): { message: Element; child: Element } {
  const got = wire.to(BOB);
  assert.equal(got.length, 1, `one notification: ${got.map(String).join('\n')}`);
  const message = got[0] as Element;
  const children = eventOf(message)?.getChildElements() ?? [];
  assert.equal(children.length, 1);
  return { message, child: children[0] as Element };
}

describe('notifications carry what XEP-0060 says, with and without payloads', () => {
  it('configuration (§8.2.5.3): with payloads the new configuration as a result form; without, an empty element', async () => {
    const wire = await nodeWith({ notify_config: '1' });
    await wire.ok(ALICE, 'set', configure('n', { title: 'Princely Musings' }));
    const { child } = onlyEvent(wire);
    assert.equal(child.name, 'configuration');
    assert.equal(child.attrs.node, 'n');
    const x = child.getChild('x', 'jabber:x:data');
    assert.equal(x?.attrs.type, 'result');
    const form = fieldsOf(x);
    assert.deepEqual(form.get('FORM_TYPE'), [NODE_CONFIG]);
    assert.deepEqual(form.get('pubsub#title'), ['Princely Musings']);
    assert.deepEqual(form.get('pubsub#notify_config'), ['1']);
    assert.ok(x?.getChildren('field').every((f) => f.getChildren('option').length === 0), 'a result form offers no options');

    wire.messages.length = 0;
    await wire.ok(ALICE, 'set', configure('n', { deliver_payloads: '0' }));
    const quiet = onlyEvent(wire).child;
    assert.equal(quiet.name, 'configuration');
    assert.deepEqual(quiet.getChildElements(), [], 'notification-only: the empty element');
  });

  it('a cancelled configuration (§8.2.4) keeps the configuration as it is: nothing rewritten, nobody notified; a stranger\'s cancel is still forbidden', async () => {
    const wire = await nodeWith({ notify_config: '1', title: 'Before' });
    const cancel = `<pubsub xmlns='${OWNER_NS}'><configure node='n'><x xmlns='jabber:x:data' type='cancel'/></configure></pubsub>`;
    await wire.ok(ALICE, 'set', cancel);
    assert.deepEqual(wire.to(BOB), [], 'no configuration notification for a change that did not happen');
    const form = fieldsOf((await wire.ok(ALICE, 'get', `<pubsub xmlns='${OWNER_NS}'><configure node='n'/></pubsub>`)).getChild('pubsub', OWNER_NS)?.getChild('configure')?.getChild('x', 'jabber:x:data'));
    assert.deepEqual(form.get('pubsub#title'), ['Before']);
    assert.equal((await wire.error(BOB, 'set', cancel)).condition, 'forbidden');
    assert.equal((await wire.error(ALICE, 'set', cancel.replace("node='n'", "node='nowhere'"))).condition, 'item-not-found');
  });

  it('items (§7.1.2.1-2): with payloads the item with its payload; without, <item id/> alone', async () => {
    const wire = await nodeWith({});
    await wire.ok(ALICE, 'set', publish('n', `<item id='i1'>${entry('one')}</item>`));
    const item = onlyEvent(wire).child.getChild('item');
    assert.equal(item?.attrs.id, 'i1');
    assert.equal(item?.getChild('entry', 'http://www.w3.org/2005/Atom')?.getChildText('title'), 'one');

    await wire.ok(ALICE, 'set', configure('n', { deliver_payloads: '0' }));
    wire.messages.length = 0;
    await wire.ok(ALICE, 'set', publish('n', `<item id='i2'>${entry('two')}</item>`));
    const { child } = onlyEvent(wire);
    assert.equal(child.name, 'items');
    assert.deepEqual(child.getChildren('item').map((i) => [i.attrs.id, i.getChildElements().length]), [['i2', 0]]);
  });

  it('transient notification-only node (§4.3): a publish without an item gives an empty <items/> and no item id', async () => {
    const wire = await nodeWith({ persist_items: '0', deliver_payloads: '0' });
    const reply = await wire.ok(ALICE, 'set', publish('n', ''));
    assert.deepEqual(reply.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChildElements(), [], 'no item id is generated');
    const { child } = onlyEvent(wire);
    assert.equal(child.name, 'items');
    assert.equal(child.attrs.node, 'n');
    assert.deepEqual(child.getChildElements(), [], 'an empty <items/>');
  });

  it('retract (§7.2.2.1): <items><retract id/></items>, by notify_retract or the notify attribute', async () => {
    const wire = await nodeWith({ notify_retract: '1' });
    await wire.ok(ALICE, 'set', publish('n', `<item id='gone'>${entry('x')}</item>`));
    wire.messages.length = 0;
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${PUBSUB}'><retract node='n'><item id='gone'/></retract></pubsub>`);
    const { child } = onlyEvent(wire);
    assert.equal(child.name, 'items');
    assert.deepEqual(child.getChildElements().map((c) => [c.name, c.attrs.id, c.getChildElements().length]), [['retract', 'gone', 0]]);
  });

  it('purge (§8.5.2): one empty <purge node/>', async () => {
    const wire = await nodeWith({ max_items: '5' });
    for (const id of ['a', 'b']) await wire.ok(ALICE, 'set', publish('n', `<item id='${id}'>${entry(id)}</item>`));
    wire.messages.length = 0;
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><purge node='n'/></pubsub>`);
    const { child } = onlyEvent(wire);
    assert.deepEqual([child.name, child.attrs.node, child.getChildElements().length], ['purge', 'n', 0]);
  });

  it('delete (§8.4.2): <delete node/>, with the owner\'s <redirect uri/> when given', async () => {
    const wire = await nodeWith({});
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><delete node='n'><redirect uri='xmpp:alice@a.example?;node=blog'/></delete></pubsub>`);
    const { child } = onlyEvent(wire);
    assert.deepEqual([child.name, child.attrs.node], ['delete', 'n']);
    assert.deepEqual(child.getChildElements().map((c) => [c.name, c.attrs.uri]), [['redirect', 'xmpp:alice@a.example?;node=blog']]);

    const plain = await nodeWith({}, 'm');
    await plain.ok(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><delete node='m'/></pubsub>`);
    assert.deepEqual(onlyEvent(plain).child.getChildElements(), []);
    const err = await plain.error(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><delete node='m'><redirect/></delete></pubsub>`);
    assert.equal(err.condition, 'bad-request');
  });

  it('subscription (§8.8.4, notify_sub): <subscription node jid subscription/> to the subscriber and the owner', async () => {
    const wire = await nodeWith({ notify_sub: '1' });
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><subscriptions node='n'><subscription jid='${BOB}' subscription='none'/></subscriptions></pubsub>`);
    const { child } = onlyEvent(wire);
    assert.deepEqual([child.name, child.attrs.node, child.attrs.jid, child.attrs.subscription], ['subscription', 'n', BOB, 'none']);
    const owner = wire.to(ALICE).map((m) => eventOf(m)?.getChild('subscription')?.attrs.subscription);
    assert.deepEqual(owner, ['none']);
  });

  it('notification_type normal applies to every event kind; SubID headers only on items and retractions (§12.16)', async () => {
    const wire = await nodeWith({ notification_type: 'normal', notify_config: '1', notify_retract: '1' });
    // bob's second subscription (other options): notifications name the subscriptions they are for.
    await wire.ok(BOB, 'set', `<pubsub xmlns='${PUBSUB}'><subscribe node='n' jid='${BOB}'/><options>${subscribeOptionsForm({ deliver: '1', expire: '2999-01-01T00:00:00Z' })}</options></pubsub>`);
    wire.messages.length = 0;
    await wire.ok(ALICE, 'set', publish('n', `<item id='i'>${entry('i')}</item>`));
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${PUBSUB}'><retract node='n'><item id='i'/></retract></pubsub>`);
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><purge node='n'/></pubsub>`);
    await wire.ok(ALICE, 'set', configure('n', { title: 'renamed' }));
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${OWNER_NS}'><delete node='n'/></pubsub>`);
    const got = wire.to(BOB).map((m) => [eventOf(m)?.getChildElements()[0]?.name, m.attrs.type, m.getChild('headers', 'http://jabber.org/protocol/shim')?.getChildren('header').length ?? 0]);
    assert.deepEqual(got, [
      ['items', 'normal', 2],
      ['items', 'normal', 2],
      ['purge', 'normal', 0],
      ['configuration', 'normal', 0],
      ['delete', 'normal', 0],
    ]);
  });
});
