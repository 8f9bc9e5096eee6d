// A subscription the partner's service ended without a word to us — after notifications bounced
// while this site's server restarted (XEP-0060 §4.4: the service drops an unreachable
// subscriber's subscriptions and cannot tell it), by an owner, or lost with the service's data —
// is found by the next discovery (our subscriptions listed, XEP-0060 §5.6), and the node is
// followed again from its saved history position: what was published meanwhile arrives, and what
// came before is not read again. Before, the node stayed "followed" here and silent for good.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import type { PartnerManager } from '../../src/replication/partners.ts';
import { SubscriptionClaims } from '../../src/replication/subscription-claims.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { captureLog } from '../unit/capture-log.ts';
import { WireHarness } from './harness.ts';
import { create, managerOn, memoryPositions, publish, until, useSite, withPartner } from './partner-fixture.ts';

/** A sink that counts the writes per item of `node`. */
function counting(node: string): { sink: PartnerSink; writes: Map<string, number> } {
  const writes = new Map<string, number>();
  const sink: PartnerSink = {
    writeItem: async (_service, n, item) => {
      if (n === node) writes.set(String(item.attrs.id), (writes.get(String(item.attrs.id)) ?? 0) + 1);
      return true;
    },
    retract: async () => undefined,
  };
  return { sink, writes };
}

describe('a subscription the partner service dropped silently is found and followed again', () => {
  const at = useSite();

  it('the next discovery subscribes again and catches up from the saved position', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/lost'));
    await alice.iq('set', site.jid, publish('/tags/lost', 'k0'));
    const { saved, positions } = memoryPositions();
    const { sink, writes } = counting('/tags/lost');
    const log = captureLog();
    await withPartner(site, 'pubsub.beta.test', sink, { positions, log }, async ({ manager }) => {
      await until(() => writes.has('k0') && saved.has(`${site.jid} /tags/lost`), 'the first catch-up and its history position');
      await manager.settled();
      const k0Writes = writes.get('k0'); // the catch-up's, and the §6.1.7 last item's on subscribing
      // The service ends the subscription as it does after repeated bounces: no notification to us.
      const dropped = await site.core.service.dropUnreachable('pubsub.beta.test');
      assert.deepEqual(dropped.map((s) => s.node), ['/tags/lost']);
      // k1, then k1-last: the last item comes again on subscribing (§6.1.7); k1 only from the history.
      await alice.iq('set', site.jid, publish('/tags/lost', 'k1'));
      await alice.iq('set', site.jid, publish('/tags/lost', 'k1-last'));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(writes.has('k1'), false, 'not notified: the subscription is gone');
      assert.ok(manager.subscriptions().includes(`${site.jid} /tags/lost`), 'still followed as far as the partner knew');
      manager.discoverSoon();
      await manager.settled();
      await until(() => writes.has('k1'), 'k1, published while unsubscribed, from the history after subscribing again');
      assert.ok(log.lines.some((l) => l.level === 'warn' && /subscription to a partner node is gone at its service/.test(l.msg) && l.node === '/tags/lost'));
      assert.equal(writes.get('k0'), k0Writes, 'caught up from the saved position, not from the current items');
      await alice.iq('set', site.jid, publish('/tags/lost', 'k2'));
      await until(() => writes.has('k2'), 'live again');
      const subs = await site.core.service.getSubscriptions('alice@alpha.test', '/tags/lost');
      assert.ok(subs.some((s) => s.jid === 'pubsub.beta.test'), 'subscribed again at the service');
    });
  });

  it('shared with the other replication on the JID (Ajatus and Midgard): both follow again, each gets what was published while there was none', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/shared'));
    await alice.iq('set', site.jid, publish('/tags/shared', 's0'));
    const claims = new SubscriptionClaims();
    const [a, b] = [memoryPositions(), memoryPositions()];
    const [sinkA, sinkB] = [counting('/tags/shared'), counting('/tags/shared')];
    const managers: PartnerManager[] = [];
    // As src/app/replication.ts routes them: every replication on the JID gets every event.
    const toAll = (stanza: Element): void => {
      for (const m of managers) void m.handleEvent(stanza);
    };
    const harness = await WireHarness.start({ jid: 'pubsub.beta.test', network: site.network, messages: new Map([[NS.PUBSUB_EVENT, toAll], [NS.MAM, toAll], [NS.PUBSUB, toAll]]) });
    try {
      managers.push(managerOn(site, harness, sinkA.sink, { positions: a.positions, claims, follow: ['/tags/shared'] }));
      managers.push(managerOn(site, harness, sinkB.sink, { positions: b.positions, claims, follow: ['/tags/shared'] }));
      const [first, second] = managers as [PartnerManager, PartnerManager];
      await until(() => sinkA.writes.has('s0') && sinkB.writes.has('s0') && a.saved.size > 0 && b.saved.size > 0, 'both caught up, with positions');
      await Promise.all([first.settled(), second.settled()]);
      await site.core.service.dropUnreachable('pubsub.beta.test');
      // Two while there is no subscription: the one the service sends on subscribing again (§6.1.7,
      // the last item) reaches both replications; the one before it only a catch-up brings.
      await alice.iq('set', site.jid, publish('/tags/shared', 's1'));
      await alice.iq('set', site.jid, publish('/tags/shared', 's1-last'));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sinkA.writes.has('s1') || sinkB.writes.has('s1'), false, 'not notified: the subscription is gone');
      first.discoverSoon(); // only the first one's discovery finds it gone
      await until(() => sinkA.writes.has('s1'), 's1 at the replication that found the subscription gone');
      await until(() => sinkB.writes.has('s1'), 's1 at the other replication too, from its own saved position');
      await alice.iq('set', site.jid, publish('/tags/shared', 's2'));
      await until(() => sinkA.writes.has('s2') && sinkB.writes.has('s2'), 'both live again');
    } finally {
      for (const m of managers) await m.stop();
      await harness.stop();
    }
  });
});
