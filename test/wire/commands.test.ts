// XEP-0050 get-pending (XEP-0060 §8.7) for a service admin, who owns every node without an
// affiliation of its own: it is not refused, may name any node, and the approval forms of that
// node's pending requests are sent to it.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PUBSUB } from '../e2e/client.ts';
import { create } from '../e2e/fixtures.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { GET_PENDING } from '../../src/xmpp/commands.ts';
import { useHarnesses } from './harness.ts';

const SVC = 'pubsub.a.example';
const ALICE = 'alice@a.example/desk';
const ADMIN = 'admin@a.example/console';
const harness = useHarnesses({ jid: SVC, config: { pubsub: { admins: ['admin@a.example'] } } });

describe('get-pending for a service admin', () => {
  it('the admin, owning no node, gets a form where it may name any node, and the approval forms of that node', async () => {
    const wire = await harness();
    await wire.ok(ALICE, 'set', create('club', { access_model: 'authorize' }));
    await wire.ok('carol@b.example/x', 'set', `<pubsub xmlns='${PUBSUB}'><subscribe node='club' jid='carol@b.example/x'/></pubsub>`);
    const step1 = (await wire.ok(ADMIN, 'set', `<command xmlns='${NS.COMMANDS}' node='${GET_PENDING}' action='execute'/>`)).getChild('command', NS.COMMANDS);
    assert.equal(step1?.attrs.status, 'executing');
    const field = step1?.getChild('x', 'jabber:x:data')?.getChildren('field').find((f) => f.attrs.var === 'pubsub#node');
    assert.equal(field?.attrs.type, 'text-single', 'any node may be named');
    const before = wire.messages.length;
    const step2 = await wire.ok(ADMIN, 'set', `<command xmlns='${NS.COMMANDS}' node='${GET_PENDING}' sessionid='${step1?.attrs.sessionid}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#node'><value>club</value></field></x></command>`);
    assert.equal(step2.getChild('command', NS.COMMANDS)?.attrs.status, 'completed');
    const forms = wire.to(ADMIN, before).filter((m) => m.getChild('x', 'jabber:x:data')?.getChildren('field').some((f) => f.attrs.var === 'pubsub#subscriber_jid' && f.getChildText('value') === 'carol@b.example/x'));
    assert.equal(forms.length, 1, 'the approval form of carol\'s request, sent to the admin');
  });
});
