// A partner whose setting `follow` turns to "none" while Hermod runs (src/replication/partners.ts
// discover): what was followed of its services is unfollowed — and unsubscribed at the partner's
// service — at the next discovery, on the in-process wire harness.

import { after, describe, it } from 'node:test';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { WireHarness } from './harness.ts';
import { startPartner } from './partner-fixture.ts';

/** Waits (polling) until `done` holds; fails after 10 s. */
async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (const start = Date.now(); !(await done()); await new Promise((r) => setTimeout(r, 10))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

describe('partner setting follow turned to "none"', () => {
  const stops: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  it('unfollows and unsubscribes every node of its services at the next discovery', async () => {
    const site = await WireHarness.start({ jid: 'pubsub.pi.test' });
    stops.push(() => site.stop());
    const alice = site.client('alice@pi.test/desk');
    for (const node of ['/tags/n1', '/tags/n2']) await alice.iq('set', site.jid, `<pubsub xmlns='${NS.PUBSUB}'><create node='${node}'/></pubsub>`);
    let follow: 'all' | 'none' = 'all';
    const sink: PartnerSink = { writeItem: async () => true, retract: async () => undefined };
    const { harness, manager } = await startPartner(site, 'pubsub.rho.test', sink, { follow: () => follow });
    stops.push(() => manager.stop(), () => harness.stop());
    const subscribed = async (node: string): Promise<boolean> => (await site.core.service.subscriptionsOf(harness.jid, node)).some((sub) => sub.state === 'subscribed');
    await until(async () => manager.subscriptions().length === 2 && (await subscribed('/tags/n1')) && (await subscribed('/tags/n2')), 'both followed');
    follow = 'none';
    manager.discoverSoon();
    await until(async () => manager.subscriptions().length === 0 && !(await subscribed('/tags/n1')) && !(await subscribed('/tags/n2')), 'both unfollowed and unsubscribed');
  });
});
