// Every registered pubsub#node_config field on the wire (XEP-0060 §16.4.3, XEP-0248): accepted
// at the values Hermod honours and shown in the configuration form and the §5.4 meta-data,
// refused with not-acceptable naming field and value otherwise; the same fields as §7.1.5
// publish-options preconditions.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import { NODE_CONFIG_REGISTRY } from '../fixtures/node-config-registry.ts';
import { OWNER as OWNER_NS, PUBSUB } from '../e2e/client.ts';
import { configure, create, fieldsOf, publishWithOptions, type FormFields } from '../e2e/fixtures.ts';
import { useHarnesses } from './harness.ts';

const ALICE = 'alice@a.example/desk';
const harness = useHarnesses({ jid: 'pubsub.a.example' });
/** The form fields of a registry-style list ({var, values}). */
const form = (fields: ReadonlyArray<{ var: string; values: readonly string[] }>): FormFields => Object.fromEntries(fields.map((f) => [f.var, f.values]));
const createWith = (node: string, fields: ReadonlyArray<{ var: string; values: readonly string[] }>): string => create(node, form(fields));
const configFormOf = (reply: Element): Element | undefined => reply.getChild('pubsub', OWNER_NS)?.getChild('configure')?.getChild('x', 'jabber:x:data');
const publishWith = (node: string, id: string, fields: ReadonlyArray<{ var: string; values: readonly string[] }>): string => publishWithOptions(node, id, form(fields));

describe('pubsub#node_config registry on the wire', () => {
  it('accepts every registered field at an honoured value, and the configuration form shows it', async () => {
    const wire = await harness();
    for (const [i, field] of NODE_CONFIG_REGISTRY.entries()) {
      await wire.ok(ALICE, 'set', createWith(`n${i}`, [{ var: field.var, values: field.set }]));
      const form = fieldsOf(configFormOf(await wire.ok(ALICE, 'get', `<pubsub xmlns='${OWNER_NS}'><configure node='n${i}'/></pubsub>`)));
      assert.deepEqual(form.get(field.var), field.shown ?? field.set, `${field.var} reads back`);
    }
  });

  it('the default form lists every registered field, and submitting it back as it is creates a node', async () => {
    const wire = await harness();
    const form = wire.ok(ALICE, 'get', `<pubsub xmlns='${OWNER_NS}'><default/></pubsub>`);
    const x = (await form).getChild('pubsub', OWNER_NS)?.getChild('default')?.getChild('x', 'jabber:x:data');
    const fields = fieldsOf(x);
    fields.delete('FORM_TYPE');
    assert.deepEqual([...fields.keys()].sort(), NODE_CONFIG_REGISTRY.map((f) => f.var).sort());
    await wire.ok(ALICE, 'set', createWith('whole', [...fields].map(([v, values]) => ({ var: v, values }))));
  });

  it('refuses each value it cannot honour with not-acceptable naming the field and the value', async () => {
    const wire = await harness();
    await wire.ok(ALICE, 'set', `<pubsub xmlns='${PUBSUB}'><create node='existing'/></pubsub>`);
    for (const field of NODE_CONFIG_REGISTRY) {
      for (const values of field.refused ?? []) {
        const created = await wire.error(ALICE, 'set', createWith(`refused-${field.var}`, [{ var: field.var, values }]));
        const configured = await wire.error(ALICE, 'set', configure('existing', { [field.var]: values }));
        for (const err of [created, configured]) {
          assert.deepEqual([err.type, err.condition], ['modify', 'not-acceptable'], `${field.var}=${values.join(',')}`);
          assert.ok(err.text?.includes(field.var) && err.text.includes(values[0] as string), `the text names ${field.var} and '${values[0]}': ${err.text}`);
        }
      }
    }
    // Text beyond what a node keeps: a title of 4097 characters, 257 contacts.
    for (const [field, values, said] of [
      ['pubsub#title', ['t'.repeat(4097)], 'at most 4096 characters'],
      ['pubsub#contact', Array.from({ length: 257 }, (_, i) => `c${i}@a.example`), 'at most 256 values'],
    ] as const) {
      const err = await wire.error(ALICE, 'set', configure('existing', { [field]: [...values] }));
      assert.deepEqual([err.type, err.condition], ['modify', 'not-acceptable']);
      assert.ok(err.text?.includes(field) && err.text.includes(said), String(err.text));
    }
    const nodes = await wire.ok(ALICE, 'get', `<query xmlns='http://jabber.org/protocol/disco#items'/>`);
    assert.deepEqual(nodes.getChild('query')?.getChildren('item').map((i) => i.attrs.node), ['existing'], 'no refused node was created');
  });

  it('subscribe=0 refuses subscription requests with feature-not-implemented + unsupported feature=subscribe (§6.1.3.11)', async () => {
    const wire = await harness();
    await wire.ok(ALICE, 'set', createWith('closed', [{ var: 'pubsub#subscribe', values: ['0'] }]));
    const reply = await wire.send('bob@b.example/x', 'set', `<pubsub xmlns='${PUBSUB}'><subscribe node='closed' jid='bob@b.example/x'/></pubsub>`);
    const error = reply.getChild('error');
    assert.equal(error?.attrs.type, 'cancel');
    assert.ok(error?.getChild('feature-not-implemented', 'urn:ietf:params:xml:ns:xmpp-stanzas'));
    assert.equal(error?.getChild('unsupported', 'http://jabber.org/protocol/pubsub#errors')?.attrs.feature, 'subscribe');
  });

  it('shows contact and language in the disco#info meta-data (§5.4)', async () => {
    const wire = await harness();
    await wire.ok(ALICE, 'set', createWith('meta', [{ var: 'pubsub#contact', values: ['bard@a.example'] }, { var: 'pubsub#language', values: ['en'] }]));
    const info = await wire.ok('bob@b.example/x', 'get', `<query xmlns='http://jabber.org/protocol/disco#info' node='meta'/>`);
    const meta = fieldsOf(info.getChild('query')?.getChild('x', 'jabber:x:data'));
    assert.deepEqual(meta.get('pubsub#contact'), ['bard@a.example']);
    assert.deepEqual(meta.get('pubsub#language'), ['en']);
  });

  it('publish-options: a precondition on any registered field is met by the node value and not met by another; unknown fields are refused', async () => {
    const wire = await harness();
    for (const [i, field] of NODE_CONFIG_REGISTRY.entries()) {
      const node = `p${i}`;
      await wire.ok(ALICE, 'set', createWith(node, [{ var: field.var, values: field.set }]));
      await wire.ok(ALICE, 'set', publishWith(node, 'met', [{ var: field.var, values: field.set }]));
      const err = await wire.error(ALICE, 'set', publishWith(node, 'unmet', [{ var: field.var, values: field.other }]));
      assert.deepEqual([err.type, err.condition, err.appCondition], ['cancel', 'conflict', 'precondition-not-met'], `${field.var}=${field.other.join(',')}`);
    }
    const unknown = await wire.error(ALICE, 'set', publishWith('p0', 'x', [{ var: 'pubsub#no_such_field', values: ['1'] }]));
    assert.deepEqual([unknown.condition, unknown.appCondition], ['conflict', 'precondition-not-met']);
    const garbage = await wire.error(ALICE, 'set', publishWith('p0', 'x', [{ var: 'pubsub#max_items', values: ['lots'] }]));
    assert.deepEqual([garbage.condition, garbage.appCondition], ['conflict', 'precondition-not-met']);
  });
});
