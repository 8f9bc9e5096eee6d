// A request to a partner's service that gets no answer (a timeout: IqError remote-server-timeout,
// type wait) or a "not now" (any error of type wait, such as a rate limit) is not a refusal: the
// request may have been applied, or will be on a later try (IqError.undecided). Two places took
// such an answer as final: a subscribe that timed out was logged as refused and the node left
// unfollowed until the next full discovery round (minutes), and a drain whose pause of delivery
// (pubsub#deliver=0) timed out never resumed delivery — if the service had applied the pause,
// the node's notifications stopped for good. Likewise a restart's history replay that timed out
// fell back to the node's current items and moved the position to the history's end: what was
// retracted meanwhile was never retracted here; and a first follow whose look at the history's
// end timed out read current items only and saved no history position.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import type { HistoryPositions } from '../../src/replication/partners.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { WireHarness } from './harness.ts';
import { aroundRequests, create, memoryPositions, publish, until, useSite, withPartner } from './partner-fixture.ts';

const retract = (node: string, id: string): string => `<pubsub xmlns='${NS.PUBSUB}'><retract node='${node}' notify='1'><item id='${id}'/></retract></pubsub>`;

/** What the IQ caller gives a request that got no answer in time (src/component/iq-caller.ts). */
const timeout = (to: string): IqError => new IqError('remote-server-timeout', undefined, 'no answer within 15000 ms', to, 'wait');

/** A sink that records the items written per node, and can be held shut (a database that fell behind). */
function recordingSink() {
  const written = new Map<string, string[]>();
  const retracted: string[] = [];
  let gate: Promise<void> | undefined;
  let open: () => void = () => undefined;
  const sink: PartnerSink = {
    writeItem: async (_service, node, item) => {
      await gate;
      written.set(node, [...(written.get(node) ?? []), String(item.attrs.id)]);
      return true;
    },
    retract: async (_service, node, id) => void retracted.push(`${node} ${id}`),
  };
  return {
    sink,
    retracted,
    written: (node: string): string[] => written.get(node) ?? [],
    shut: () => (gate = new Promise<void>((resolve) => (open = resolve))),
    open: () => {
      gate = undefined;
      open();
    },
  };
}

/**
 * A partner `jid` that followed `node` of `site` once, until item `id` was written and the node's
 * history position saved, then stopped: its history positions, for a restart.
 */
async function followedOnce(site: WireHarness, jid: string, node: string, id: string): Promise<HistoryPositions> {
  const { saved, positions } = memoryPositions();
  const first = recordingSink();
  await withPartner(site, jid, first.sink, { positions }, async () => {
    await until(() => first.written(node).includes(id) && saved.has(`${site.jid} ${node}`), 'the first catch-up and its history position');
  });
  return positions;
}

/** Whether `child` is a subscription options request setting pubsub#deliver to `value` on `node` (XEP-0060 §6.3.5). */
function setsDelivery(child: Element, node: string, value: '0' | '1'): boolean {
  const options = child.getChild('options');
  if (child.name !== 'pubsub' || options?.attrs.node !== node) return false;
  const field = options.getChild('x')?.getChildren('field').find((f) => f.attrs.var === 'pubsub#deliver');
  return field?.getChildText('value') === value;
}

describe('a partner request that gets no answer is not taken as a refusal', () => {
  const at = useSite();

  it('a subscribe that timed out is tried again within seconds (not at the next discovery round), and the node replicates', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/late'));
    await alice.iq('set', site.jid, publish('/tags/late', 'l0'));
    const rec = recordingSink();
    let subscribes = 0;
    await withPartner(site, 'pubsub.beta.test', rec.sink, {
      iq: aroundRequests(async (child, send) => {
        if (child.name === 'pubsub' && child.getChild('subscribe')?.attrs.node === '/tags/late' && ++subscribes === 1) throw timeout(site.jid);
        return send();
      }),
    }, async ({ manager }) => {
      // The fixture's discovery interval is 60 s: within 15 s only the retry after a failure (2 s) can follow the node.
      await until(() => rec.written('/tags/late').includes('l0'), 'the node followed after the subscribe that got no answer');
      assert.ok(subscribes >= 2, `subscribed again (${subscribes} subscribes)`);
      assert.ok(manager.subscriptions().includes(`${site.jid} /tags/late`));
      await alice.iq('set', site.jid, publish('/tags/late', 'l1'));
      await until(() => rec.written('/tags/late').includes('l1'), 'a later publication written as it arrives');
    });
  });

  it('a drain whose pause of delivery got no answer (but was applied) resumes delivery once it has read the history', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/mute'));
    await alice.iq('set', site.jid, publish('/tags/mute', 'm0'));
    const { saved, positions } = memoryPositions();
    const rec = recordingSink();
    let pausesLost = 0;
    let resumed = 0;
    const notified: string[] = [];
    await withPartner(site, 'pubsub.beta.test', rec.sink, {
      positions,
      liveBacklogItems: 5,
      digestMs: 0,
      // The service applies the pause, but its answer is lost: the caller sees a timeout.
      iq: aroundRequests(async (child, send) => {
        if (setsDelivery(child, '/tags/mute', '1')) resumed++;
        if (!setsDelivery(child, '/tags/mute', '0')) return send();
        await send();
        pausesLost++;
        throw timeout(site.jid);
      }),
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        if (items?.attrs.node === '/tags/mute') for (const item of items.getChildren('item')) notified.push(String(item.attrs.id));
      },
    }, async () => {
      await until(() => rec.written('/tags/mute').includes('m0') && saved.has(`${site.jid} /tags/mute`), 'the catch-up of the first item and its history position');
      rec.shut();
      for (let i = 1; i <= 40; i++) await alice.iq('set', site.jid, publish('/tags/mute', `m${i}`));
      await until(() => pausesLost > 0, 'the drain pausing delivery');
      rec.open();
      await until(() => rec.written('/tags/mute').includes('m40'), 'every item written from the history');
      await until(() => resumed > 0, 'delivery resumed after the drain');
      const before = notified.length;
      await alice.iq('set', site.jid, publish('/tags/mute', 'm41'));
      await until(() => rec.written('/tags/mute').includes('m41'), 'a publication after the drain written');
      assert.ok(notified.length > before && notified.includes('m41'), 'm41 came as a notification (delivery is on again), not only from a history read');
    });
  });

  it('a partner removed while its service does not answer the unsubscribe is asked again until the subscription ends there', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/leave'));
    let unsubscribes = 0;
    await withPartner(site, 'pubsub.kappa.test', recordingSink().sink, {
      iq: aroundRequests(async (child, send) => {
        if (child.name === 'pubsub' && child.getChild('unsubscribe')?.attrs.node === '/tags/leave' && ++unsubscribes === 1) throw timeout(site.jid);
        return send();
      }),
    }, async ({ harness, manager }) => {
      let subscribed = false;
      const check = async (): Promise<void> => void (subscribed = (await site.core.service.subscriptionsOf(harness.jid, '/tags/leave')).some((sub) => sub.state === 'subscribed'));
      const poll = setInterval(() => void check(), 10);
      try {
        await until(() => manager.subscriptions().includes(`${site.jid} /tags/leave`) && subscribed, 'the node followed');
        await manager.removePartner(site.jid);
        await check();
        assert.equal(unsubscribes, 1);
        assert.ok(subscribed, 'the unsubscribe got no answer: still subscribed at the service');
        // The fixture's discovery interval is 60 s: within 15 s only the retry (2 s) can end it.
        await until(() => !subscribed, 'the subscription ended at the service');
        assert.equal(unsubscribes, 2, 'asked once more');
      } finally {
        clearInterval(poll);
      }
    });
  });

  it('a partner not followed ("none") whose service did not answer disco#info is looked up again, and the subscription an earlier run left there is ended', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/left-behind'));
    const jid = 'pubsub.lambda.test';
    // An earlier run followed everything; it stopped (a stop keeps the subscriptions).
    await withPartner(site, jid, recordingSink().sink, {}, async ({ manager }) => {
      await until(() => manager.subscriptions().includes(`${site.jid} /tags/left-behind`), 'followed in the earlier run');
    });
    let infos = 0;
    await withPartner(site, jid, recordingSink().sink, {
      follow: 'none',
      iq: aroundRequests(async (child, send) => {
        if (child.name === 'query' && child.attrs.xmlns === NS.DISCO_INFO && ++infos === 1) throw timeout(site.jid);
        return send();
      }),
    }, async ({ harness, manager }) => {
      let subscribed = true;
      const poll = setInterval(() => void site.core.service.subscriptionsOf(harness.jid, '/tags/left-behind').then((subs) => (subscribed = subs.some((sub) => sub.state === 'subscribed'))), 10);
      try {
        await manager.settled();
        assert.ok(infos >= 1, 'the first lookup got no answer');
        manager.discoverSoon(); // the next full round (the fixture's interval is 60 s)
        await until(() => !subscribed, 'the subscription of the earlier run ended at the service');
      } finally {
        clearInterval(poll);
      }
    });
  });

  it('a first follow whose look at the history\'s end got no answer is tried again, so the node gets a history position (not current items only, with none)', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/first'));
    await alice.iq('set', site.jid, publish('/tags/first', 'f0'));
    const { saved, positions } = memoryPositions();
    const rec = recordingSink();
    let ends = 0;
    await withPartner(site, 'pubsub.first.test', rec.sink, {
      positions,
      iq: aroundRequests(async (child, send) => {
        // The history's end: the newest entry, one (XEP-0313 with RSM before='').
        const end = child.name === 'query' && child.attrs.xmlns === NS.MAM && child.attrs.node === '/tags/first' && child.getChild('set')?.getChildText('max') === '1';
        if (end && ++ends === 1) throw timeout(site.jid);
        return send();
      }),
    }, async () => {
      await until(() => rec.written('/tags/first').includes('f0') && saved.has(`${site.jid} /tags/first`), 'the node caught up with its history position saved');
      assert.ok(ends >= 2, `the history's end asked again (${ends} times)`);
    });
  });

  it('history pages that never get an answer in time (large items, a slow link) are asked again smaller until they do', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/slow'));
    await alice.iq('set', site.jid, publish('/tags/slow', 's0'));
    const positions = await followedOnce(site, 'pubsub.mu.test', '/tags/slow', 's0');
    for (const id of ['s1', 's2', 's3']) await alice.iq('set', site.jid, publish('/tags/slow', id));
    const again = recordingSink();
    const asked: number[] = [];
    await withPartner(site, 'pubsub.mu.test', again.sink, {
      positions,
      iq: aroundRequests(async (child, send) => {
        if (child.name === 'query' && child.attrs.xmlns === NS.MAM && child.attrs.node === '/tags/slow') {
          const max = Number(child.getChild('set')?.getChildText('max'));
          asked.push(max);
          if (max > 25) throw timeout(site.jid); // only pages of at most 25 entries come back in time
        }
        return send();
      }),
    }, async () => {
      await until(() => ['s1', 's2', 's3'].every((id) => again.written('/tags/slow').includes(id)), 'what was published while stopped, from the history', 20_000);
      assert.deepEqual(asked.slice(0, 3), [100, 50, 25], `pages asked: ${asked.join(', ')}`);
    });
  });

  it('a history page refused because the partner\'s server is unreachable (not a slow answer) is asked again at full size', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/down'));
    await alice.iq('set', site.jid, publish('/tags/down', 'd0'));
    const positions = await followedOnce(site, 'pubsub.nu.test', '/tags/down', 'd0');
    await alice.iq('set', site.jid, publish('/tags/down', 'd1'));
    const again = recordingSink();
    const asked: number[] = [];
    await withPartner(site, 'pubsub.nu.test', again.sink, {
      positions,
      iq: aroundRequests(async (child, send) => {
        if (child.name === 'query' && child.attrs.xmlns === NS.MAM && child.attrs.node === '/tags/down') {
          asked.push(Number(child.getChild('set')?.getChildText('max')));
          if (asked.length === 1) throw new IqError('remote-server-not-found', undefined, 'the server is down', site.jid, 'cancel');
        }
        return send();
      }),
    }, async () => {
      await until(() => again.written('/tags/down').includes('d1'), 'd1 from the history once the server answers');
      assert.deepEqual(asked.slice(0, 2), [100, 100], `pages asked: ${asked.join(', ')}`);
    });
  });

  it('a restart\'s history replay that got no answer is tried again from the saved position: a retraction missed meanwhile is applied', async () => {
    const { site, alice } = at;
    await alice.iq('set', site.jid, create('/tags/gone'));
    for (const id of ['g0', 'g1']) await alice.iq('set', site.jid, publish('/tags/gone', id));
    const positions = await followedOnce(site, 'pubsub.beta.test', '/tags/gone', 'g1');
    // While the partner is stopped: g1 retracted, g2 published.
    await alice.iq('set', site.jid, retract('/tags/gone', 'g1'));
    await alice.iq('set', site.jid, publish('/tags/gone', 'g2'));
    const again = recordingSink();
    let lost = 0;
    await withPartner(site, 'pubsub.beta.test', again.sink, {
      positions,
      iq: aroundRequests(async (child, send) => {
        if (child.name === 'query' && child.attrs.xmlns === NS.MAM && child.attrs.node === '/tags/gone' && ++lost === 1) throw timeout(site.jid);
        return send();
      }),
    }, async () => {
      await until(() => again.retracted.includes('/tags/gone g1'), 'the retraction made while stopped, from the history read again');
      await until(() => again.written('/tags/gone').includes('g2'), 'g2 from the history');
      assert.ok(lost >= 2, `the history asked again (${lost} queries)`);
      assert.ok(!again.written('/tags/gone').includes('g0'), 'not read again from the current items (g0 was written before the restart)');
    });
  });
});
