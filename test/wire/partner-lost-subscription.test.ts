// A subscription the partner's service ended without a word to us — after notifications bounced
// while this site's server restarted (XEP-0060 §4.4: the service drops an unreachable
// subscriber's subscriptions and cannot tell it), by an owner, or lost with the service's data —
// is found by the next discovery (our subscriptions listed, XEP-0060 §5.6), and the node is
// followed again from its saved history position: what was published meanwhile arrives, and what
// came before is not read again. Before, the node stayed "followed" here and silent for good.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import type { TestClient } from '../e2e/client.ts';
import { captureLog } from '../unit/capture-log.ts';
import { WireHarness } from './harness.ts';
import { create, memoryPositions, publish, until, withPartner } from './partner-fixture.ts';

describe('a subscription the partner service dropped silently is found and followed again', () => {
  let site: WireHarness;
  let alice: TestClient;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    await site?.stop();
  });

  it('the next discovery subscribes again and catches up from the saved position', async () => {
    await alice.iq('set', site.jid, create('/tags/lost'));
    await alice.iq('set', site.jid, publish('/tags/lost', 'k0'));
    const { saved, positions } = memoryPositions();
    const writes = new Map<string, number>();
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        if (node === '/tags/lost') writes.set(String(item.attrs.id), (writes.get(String(item.attrs.id)) ?? 0) + 1);
        return true;
      },
      retract: async () => undefined,
    };
    const log = captureLog();
    await withPartner(site, 'pubsub.beta.test', sink, { positions, log }, async ({ manager }) => {
      await until(() => writes.has('k0') && saved.has(`${site.jid} /tags/lost`), 'the first catch-up and its history position');
      await manager.settled();
      const k0Writes = writes.get('k0'); // the catch-up's, and the §6.1.7 last item's on subscribing
      // The service ends the subscription as it does after repeated bounces: no notification to us.
      const dropped = await site.core.service.dropUnreachable('pubsub.beta.test');
      assert.deepEqual(dropped.map((s) => s.node), ['/tags/lost']);
      await alice.iq('set', site.jid, publish('/tags/lost', 'k1'));
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
});
