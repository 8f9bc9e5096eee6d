// A partner's subscriptions ask for notification digests (src/replication/partners.ts), on the
// in-process wire harness: two Hermods on one network, the partner's PartnerManager following the
// site's node through its real pub/sub service. With a digest setting the subscription is stored
// with pubsub#digest on, the first publication arrives at once, the next ones (and a retraction)
// arrive in one message and reach the sink in publish order; with 0 the subscription stays plain
// (and one an earlier run asked digests of is made plain again).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { managerOn, startPartner } from './partner-fixture.ts';

const create = (node: string): string => `<pubsub xmlns='${NS.PUBSUB}'><create node='${node}'/></pubsub>`;
const publish = (node: string, id: string): string =>
  `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>${id}</title></entry></item></publish></pubsub>`;
const retract = (node: string, id: string): string => `<pubsub xmlns='${NS.PUBSUB}'><retract node='${node}' notify='1'><item id='${id}'/></retract></pubsub>`;

/** Waits (polling) until `done` holds; fails after 10 s. */
async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (const start = Date.now(); !(await done()); await new Promise((r) => setTimeout(r, 10))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

/** A partner Hermod following `service` with this digest setting: what its sink was handed, and the event messages it got. */
async function follower(site: WireHarness, jid: string, digestMs: number) {
  const written: string[] = [];
  const messages: Element[] = [];
  const sink: PartnerSink = {
    writeItem: async (_service, _node, item) => {
      written.push(`+${String(item.attrs.id)}`);
      return true;
    },
    retract: async (_service, _node, id) => void written.push(`-${id}`),
  };
  const { harness, manager } = await startPartner(site, jid, sink, { digestMs, onEvent: (stanza) => messages.push(stanza) });
  return { harness, manager, written, messages };
}

describe('partner subscriptions ask for notification digests', () => {
  let site: WireHarness;
  let alice: TestClient;
  const stops: Array<() => Promise<unknown>> = [];

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    for (const stop of stops.reverse()) await stop();
    await site?.stop();
  });

  const optionsOf = async (node: string, jid: string) => (await site.core.service.getSubscriptionOptions(jid, node, jid, undefined)).options;

  it('with a digest setting: subscribed with pubsub#digest; one edit at once, then several in one message, handed to the sink in publish order', async () => {
    await alice.iq('set', site.jid, create('/tags/digest'));
    const f = await follower(site, 'pubsub.beta.test', 1000);
    stops.push(() => f.manager.stop(), () => f.harness.stop());
    await until(async () => (await optionsOf('/tags/digest', f.harness.jid).catch(() => undefined))?.digest === true, 'the subscription with digests');
    assert.equal((await optionsOf('/tags/digest', f.harness.jid))?.digestFrequency, 1000);

    await alice.iq('set', site.jid, publish('/tags/digest', 'p1'));
    await until(() => f.written.length === 1, 'the first edit');
    await alice.iq('set', site.jid, publish('/tags/digest', 'p2'));
    await alice.iq('set', site.jid, retract('/tags/digest', 'p1'));
    await alice.iq('set', site.jid, publish('/tags/digest', 'p3'));
    await until(() => f.written.length === 4, 'the digest');
    assert.deepEqual(f.written, ['+p1', '+p2', '-p1', '+p3']);
    const itemMessages = f.messages.filter((m) => m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items'));
    assert.equal(itemMessages.length, 2, 'two messages: the first edit, then the digest');
  });

  it('with 0: the subscription stays one notification per item', async () => {
    await alice.iq('set', site.jid, create('/tags/plain'));
    const f = await follower(site, 'pubsub.gamma.test', 0);
    stops.push(() => f.manager.stop(), () => f.harness.stop());
    await until(() => f.manager.subscriptions().some((s) => s.endsWith(' /tags/plain')), 'the subscription');
    for (const id of ['q1', 'q2', 'q3']) await alice.iq('set', site.jid, publish('/tags/plain', id));
    await until(() => f.written.filter((w) => w.startsWith('+q')).length === 3, 'the items');
    assert.equal((await optionsOf('/tags/plain', f.harness.jid))?.digest, undefined);
    assert.equal(f.messages.filter((m) => m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items')?.attrs.node === '/tags/plain').length, 3);
  });

  it('with 0 after a run that asked for digests: the subscription is made one notification per item again', async () => {
    await alice.iq('set', site.jid, create('/tags/again'));
    const f = await follower(site, 'pubsub.delta.test', 1000);
    stops.push(() => f.harness.stop());
    await until(async () => (await optionsOf('/tags/again', f.harness.jid).catch(() => undefined))?.digest === true, 'the subscription with digests (the earlier run)');
    await f.manager.stop();
    const sink: PartnerSink = {
      writeItem: async (_service, _node, item) => {
        f.written.push(`+${String(item.attrs.id)}`);
        return true;
      },
      retract: async () => undefined,
    };
    const plain = managerOn(site, f.harness, sink, { digestMs: 0 });
    stops.push(() => plain.stop());
    await until(async () => {
      const options = await optionsOf('/tags/again', f.harness.jid).catch(() => null); // null: no subscription now
      return options !== null && options?.digest !== true;
    }, 'digests off again');
    for (const id of ['r1', 'r2', 'r3']) await alice.iq('set', site.jid, publish('/tags/again', id));
    await until(() => f.written.filter((w) => w.startsWith('+r')).length === 3, 'the items');
    assert.equal(f.messages.filter((m) => m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items')?.attrs.node === '/tags/again').length, 3, 'one message per item');
  });
});
