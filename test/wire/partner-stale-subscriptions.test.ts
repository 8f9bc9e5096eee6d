// Subscriptions an earlier run left behind (src/replication/partners.ts endStaleSubscriptions): a
// node dropped from a partner's `follow` while Hermod was stopped kept its subscription at the
// partner's service for good — its notifications kept coming, to be dropped. A discovery round
// now ends those no replication on the JID follows; Ajatus and Midgard share the JID, so one that
// the other follows is kept (src/replication/subscription-claims.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SubscriptionClaims } from '../../src/replication/subscription-claims.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { aroundRequests, create, managerOn, memoryPositions, publish, until, useSite, withPartner } from './partner-fixture.ts';

const sink: PartnerSink = { writeItem: async () => true, retract: async () => undefined };
const tags = (node: string): boolean => node.startsWith('/tags/');
const midgard = (node: string): boolean => node.startsWith('/midgard/');
const PARTNER = 'pubsub.beta.test';

describe('subscriptions left by an earlier run', () => {
  const at = useSite();

  const nodes = async (...names: string[]): Promise<void> => {
    const { site, alice } = at;
    for (const node of names) {
      await alice.iq('set', site.jid, create(node));
      await alice.iq('set', site.jid, publish(node, `${node.slice(1).replace('/', '-')}-1`));
    }
  };
  /** The partner's subscriptions at the site among `names`, sorted, once `settled` holds for them (or after 15 s). */
  const subscribed = async (manager: { client: { subscribedNodes(service: string): Promise<string[]> } }, names: string[], settled: (now: string[]) => boolean): Promise<string[]> => {
    const { site } = at;
    let now: string[] = [];
    for (const start = Date.now(); Date.now() - start < 15_000; await new Promise((r) => setTimeout(r, 50))) {
      now = (await manager.client.subscribedNodes(site.jid)).filter((n) => names.includes(n)).sort();
      if (settled(now)) break;
    }
    return now;
  };

  it('are ended once no replication on the JID wants them; one the other replication follows is kept (or subscribed again by it when it comes later)', async () => {
    const { site } = at;
    const names = ['/tags/a1', '/tags/b1', '/tags/c1', '/midgard/m1'];
    await nodes(...names);
    // An earlier run followed every /tags/ node (no history positions: our subscriptions are listed, XEP-0060 §5.6).
    await withPartner(site, PARTNER, sink, { offers: tags }, async ({ manager }) => {
      const first = await subscribed(manager, names, (n) => n.length === 3);
      assert.deepEqual(first, ['/tags/a1', '/tags/b1', '/tags/c1'], 'the first run subscribed to every /tags/ node');
    });
    // Now its follow list names /tags/a1 only, and a second replication on the same JID (Midgard's)
    // follows /midgard/m1 and, by name, /tags/c1 — its requests slow, so that it follows them
    // only after the first replication's round: the sweep may end /tags/c1, which the second then
    // subscribes to again (it catches up from its history position).
    const claims = new SubscriptionClaims();
    const slow = aroundRequests(async (_child, send) => {
      await new Promise((r) => setTimeout(r, 150));
      return send();
    });
    await withPartner(site, PARTNER, sink, { offers: tags, follow: ['/tags/a1'], claims }, async ({ harness, manager }) => {
      const other = managerOn(site, harness, sink, { offers: midgard, follow: ['/tags/c1', '/midgard/m1'], claims, iq: slow });
      try {
        await until(() => other.subscriptions().length === 2, 'the other replication following');
        const now = await subscribed(manager, names, (n) => !n.includes('/tags/b1') && n.includes('/midgard/m1') && n.includes('/tags/c1'));
        assert.deepEqual(now, ['/midgard/m1', '/tags/a1', '/tags/c1'], '/tags/b1 ended; /tags/c1, which the other replication follows, subscribed');
        // A later round (the other following /tags/c1 now) ends nothing it follows.
        manager.discoverSoon();
        await manager.settled(); // the round and its sweep done
        assert.deepEqual((await manager.client.subscribedNodes(site.jid)).filter((n) => names.includes(n)).sort(), ['/midgard/m1', '/tags/a1', '/tags/c1']);
      } finally {
        await other.stop();
      }
    });
  });

  it('with history positions: a partner turned to "none" while stopped has its subscriptions ended, except one the other replication follows, also once that one is stopping', async () => {
    const { site } = at;
    const names = ['/tags/n1', '/tags/n2'];
    await nodes(...names);
    const { saved, positions } = memoryPositions();
    await withPartner(site, PARTNER, sink, { offers: tags, positions }, async ({ manager }) => {
      await until(() => names.every((n) => saved.has(`${site.jid} ${n}`)), 'the first run following both, positions saved');
      assert.deepEqual(await subscribed(manager, names, (n) => n.length === 2), names);
    });
    const claims = new SubscriptionClaims();
    await withPartner(site, PARTNER, sink, { offers: tags, follow: 'none', positions, claims }, async ({ harness, manager }) => {
      const other = managerOn(site, harness, sink, { offers: midgard, follow: ['/tags/n2'], claims });
      await until(() => other.subscriptions().length === 1, 'the other replication following /tags/n2');
      const now = await subscribed(manager, names, (n) => !n.includes('/tags/n1'));
      assert.deepEqual(now, ['/tags/n2'], '/tags/n1 ended, /tags/n2 kept');
      // The other replication stops first (a shutdown); a round of this one meanwhile leaves its subscription.
      await other.stop();
      manager.discoverSoon();
      await manager.settled(); // the round and its sweep done
      assert.deepEqual((await manager.client.subscribedNodes(site.jid)).filter((n) => names.includes(n)), ['/tags/n2'], 'kept while the other is stopping');
    });
  });

  it('a node dropped from one replication\'s follow list while running stays subscribed when the other replication follows it', async () => {
    const { site } = at;
    const names = ['/tags/u1', '/tags/u2'];
    await nodes(...names);
    let follow = ['/tags/u1', '/tags/u2'];
    const claims = new SubscriptionClaims();
    await withPartner(site, PARTNER, sink, { offers: tags, follow: () => follow, claims }, async ({ harness, manager }) => {
      const other = managerOn(site, harness, sink, { offers: midgard, follow: ['/tags/u2'], claims });
      try {
        await until(() => manager.subscriptions().length >= 2 && other.subscriptions().length === 1, 'both following /tags/u2');
        assert.deepEqual(await subscribed(manager, names, (n) => n.length === 2), names);
        follow = ['/tags/u1'];
        manager.discoverSoon();
        await until(() => !manager.subscriptions().includes(`${site.jid} /tags/u2`), 'the first replication no longer following /tags/u2');
        await manager.settled(); // an unsubscribe would have been answered by now
        assert.deepEqual((await manager.client.subscribedNodes(site.jid)).filter((n) => names.includes(n)).sort(), ['/tags/u1', '/tags/u2'], 'the subscription the other follows stays');
      } finally {
        await other.stop();
      }
    });
  });
});
