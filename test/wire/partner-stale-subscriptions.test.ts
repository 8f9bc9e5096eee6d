// Subscriptions an earlier run left behind (src/replication/partners.ts endStaleSubscriptions): a
// node dropped from a partner's `follow` while Hermod was stopped kept its subscription at the
// partner's service for good — its notifications kept coming, to be dropped. A discovery round
// now lists the component JID's subscriptions (XEP-0060 §5.6) and ends those no replication on
// the JID uses; Ajatus and Midgard share the JID, so one that the other follows is kept
// (src/replication/subscription-claims.ts).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SubscriptionClaims } from '../../src/replication/subscription-claims.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { create, managerOn, publish, until, withPartner } from './partner-fixture.ts';

const sink: PartnerSink = { writeItem: async () => true, retract: async () => undefined };
const tags = (node: string): boolean => node.startsWith('/tags/');
const midgard = (node: string): boolean => node.startsWith('/midgard/');

describe('subscriptions left by an earlier run', () => {
  let site: WireHarness;
  let alice: TestClient;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
    for (const node of ['/tags/a', '/tags/b', '/tags/c', '/midgard/m']) {
      await alice.iq('set', site.jid, create(node));
      await alice.iq('set', site.jid, publish(node, `${node.slice(1).replace('/', '-')}-1`));
    }
  });
  after(async () => {
    await site?.stop();
  });

  it('are ended once no replication on the JID wants them; one that the other replication follows is kept', async () => {
    // An earlier run followed every /tags/ node.
    await withPartner(site, 'pubsub.beta.test', sink, { offers: tags }, async ({ manager }) => {
      await until(() => manager.subscriptions().length === 3, 'the first run following /tags/a, b and c');
    });
    // Now its follow list names /tags/a only, and a second replication on the same JID (Midgard's)
    // follows /midgard/m and, by name, /tags/c.
    const claims = new SubscriptionClaims();
    await withPartner(site, 'pubsub.beta.test', sink, { offers: tags, follow: ['/tags/a'], claims }, async ({ harness, manager }) => {
      const other = managerOn(site, harness, sink, { offers: midgard, follow: ['/tags/c', '/midgard/m'], claims });
      try {
        await until(() => manager.subscriptions().length === 1 && other.subscriptions().length === 2, 'both replications following');
        let nodes: string[] = [];
        for (const start = Date.now(); Date.now() - start < 15_000; await new Promise((r) => setTimeout(r, 50))) {
          nodes = (await manager.client.subscribedNodes(site.jid)).sort();
          if (!nodes.includes('/tags/b')) break;
        }
        assert.deepEqual(nodes, ['/midgard/m', '/tags/a', '/tags/c'], '/tags/b ended; /tags/c, which the other replication follows, kept');
        // Later rounds of either end nothing more.
        manager.discoverSoon();
        other.discoverSoon();
        await new Promise((r) => setTimeout(r, 1_000));
        assert.deepEqual((await manager.client.subscribedNodes(site.jid)).sort(), ['/midgard/m', '/tags/a', '/tags/c'], 'a later round ends nothing more');
      } finally {
        await other.stop();
      }
    });
  });
});
