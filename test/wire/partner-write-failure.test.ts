// A partner whose database fails a write (down longer than the sink's own retries) gets the
// document once it is back, without a restart (src/replication/follow-delivery.ts applyAgain): a live
// notification with an archive id holds the node's history position and the node is read again
// from its history; one without (the §6.1.7 last item sent on subscribing, which lies before the
// position a first catch-up saves) has its item read again by id. Before, both waited for a
// restart, and the §6.1.7 item was not even read then.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RefusedWrite, type PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { aroundRequests, create, memoryPositions, publish, until, withPartner } from './partner-fixture.ts';

/** A sink that rejects the first `failures` writes of each id in `failing` (a database down), counting every write. */
function flakySink(failing: Map<string, number>): { sink: PartnerSink; written: Map<string, number> } {
  const written = new Map<string, number>();
  const sink: PartnerSink = {
    writeItem: async (_service, _node, item) => {
      const id = String(item.attrs.id);
      const left = failing.get(id) ?? 0;
      if (left > 0) {
        failing.set(id, left - 1);
        throw new Error(`database unavailable (writing ${id})`);
      }
      written.set(id, (written.get(id) ?? 0) + 1);
      return true;
    },
    retract: async () => undefined,
  };
  return { sink, written };
}

describe('a partner write that fails is applied again once the database is back, without a restart', () => {
  let site: WireHarness;
  let alice: TestClient;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    await site?.stop();
  });

  it('a live notification with an archive id: the node is read again from its history, and its position moves past it', async () => {
    await alice.iq('set', site.jid, create('/tags/live'));
    await alice.iq('set', site.jid, publish('/tags/live', 'l0'));
    const { saved, positions } = memoryPositions();
    const failing = new Map<string, number>();
    const { sink, written } = flakySink(failing);
    const sids = new Map<string, string>();
    await withPartner(site, 'pubsub.beta.test', sink, {
      positions,
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        const sid = stanza.getChild('stanza-id', NS.SID)?.attrs.id as string | undefined;
        const id = items?.getChild('item')?.attrs.id as string | undefined;
        if (items?.attrs.node === '/tags/live' && sid && id) sids.set(id, sid);
      },
    }, async () => {
      await until(() => written.has('l0') && saved.has(`${site.jid} /tags/live`), 'the first catch-up');
      // The database refuses l1 three times (the live write, then the first two reads of the history).
      failing.set('l1', 3);
      await alice.iq('set', site.jid, publish('/tags/live', 'l1'));
      await until(() => (failing.get('l1') ?? 3) <= 2, 'the live write of l1 failing');
      await alice.iq('set', site.jid, publish('/tags/live', 'l2'));
      await until(() => written.has('l1') && written.has('l2'), 'l1 and l2 written once the database takes them', 30_000);
      assert.equal(failing.get('l1'), 0, 'l1 was refused three times before it was written');
      // Applied as they arrive again afterwards (delivery was paused while the history was read),
      // and the position follows them: past l1.
      await alice.iq('set', site.jid, publish('/tags/live', 'l3'));
      await until(() => written.has('l3') && sids.has('l3'), 'l3, notified live after the node was read again');
      await until(() => saved.get(`${site.jid} /tags/live`) === sids.get('l3'), "the node's position at l3's archive id");
    });
  });

  it('the §6.1.7 last item (no archive id) whose write fails during a first catch-up is read again by id', async () => {
    await alice.iq('set', site.jid, create('/tags/last'));
    for (const id of ['a0', 'a1', 'a2']) await alice.iq('set', site.jid, publish('/tags/last', id));
    const { saved, positions } = memoryPositions();
    const failing = new Map([['a2', 1]]);
    const { sink, written } = flakySink(failing);
    let lastWithoutSid = false;
    await withPartner(site, 'pubsub.beta.test', sink, {
      positions,
      // The catch-up's first page of items is asked for once the live write of a2 has failed:
      // a2 is then the point where the notifications begin, and the catch-up stops before it.
      iq: aroundRequests(async (child, send) => {
        const items = child.getChild('items');
        if (child.name === 'pubsub' && items?.attrs.node === '/tags/last' && !items.getChild('item')) await until(() => failing.get('a2') === 0, 'the live write of a2 failing');
        return send();
      }),
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        if (items?.attrs.node === '/tags/last' && items.getChild('item')?.attrs.id === 'a2' && !stanza.getChild('stanza-id', NS.SID)) lastWithoutSid = true;
      },
    }, async () => {
      await until(() => saved.has(`${site.jid} /tags/last`) && failing.get('a2') === 0, 'the first catch-up, with the write of a2 refused');
      assert.ok(lastWithoutSid, 'a2 came as the last item sent on subscribing, without archive id');
      await until(() => written.has('a2'), 'a2 read again and written', 15_000);
      assert.ok(written.has('a0') && written.has('a1'), 'the items before it, from the catch-up');
    });
  });

  it('a newer version that fails while the older one is being read again is read again too (no history positions: by id)', async () => {
    await alice.iq('set', site.jid, create('/tags/race'));
    const version = (v: string): string =>
      `<pubsub xmlns='${NS.PUBSUB}'><publish node='/tags/race'><item id='x'><entry xmlns='http://www.w3.org/2005/Atom'><title>${v}</title></entry></item></publish></pubsub>`;
    let failures = 0;
    const written: string[] = [];
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        if (node !== '/tags/race') return true;
        const title = item.getChild('entry')?.getChildText('title') ?? '';
        // The live v1 and the live v2 fail (the database down); any later write is taken.
        if (failures < 2 && title === `v${failures + 1}`) {
          failures++;
          throw new Error(`database unavailable (writing x ${title})`);
        }
        written.push(title);
        return true;
      },
      retract: async () => undefined,
    };
    let rereadAsked = false;
    await withPartner(site, 'pubsub.beta.test', sink, {
      // The first read of x again is held until the live v2 has failed too.
      iq: aroundRequests(async (child, send) => {
        const items = child.getChild('items');
        if (child.name === 'pubsub' && items?.attrs.node === '/tags/race' && items.getChild('item')?.attrs.id === 'x' && !rereadAsked) {
          rereadAsked = true;
          await until(() => failures === 2, 'the live v2 failing while x is read again');
        }
        return send();
      }),
    }, async ({ manager }) => {
      await until(() => manager.subscriptions().includes(`${site.jid} /tags/race`), 'following /tags/race');
      await new Promise((r) => setTimeout(r, 300)); // the catch-up of the empty node done
      await alice.iq('set', site.jid, version('v1'));
      await until(() => rereadAsked, 'x read again after v1 failed', 15_000);
      await alice.iq('set', site.jid, version('v2'));
      await until(() => written.includes('v2'), 'v2 written by a later read', 20_000);
      assert.equal(failures, 2);
    });
  });

  it('a history replay after a restart whose write fails is tried again (the follow again, from the position)', async () => {
    await alice.iq('set', site.jid, create('/tags/restart'));
    await alice.iq('set', site.jid, publish('/tags/restart', 'r0'));
    const { saved, positions } = memoryPositions();
    await withPartner(site, 'pubsub.beta.test', flakySink(new Map()).sink, { positions }, () => until(() => saved.has(`${site.jid} /tags/restart`), 'the history position saved by the first run'));
    // Published while the partner is down; its first write after the restart is refused.
    await alice.iq('set', site.jid, publish('/tags/restart', 'r1'));
    const failing = new Map([['r1', 1]]);
    const { sink, written } = flakySink(failing);
    await withPartner(site, 'pubsub.beta.test', sink, { positions }, async () => {
      await until(() => written.has('r1'), 'r1 written by the catch-up tried again', 15_000);
      assert.equal(failing.get('r1'), 0, 'its first write was refused');
    });
  });

  it('a leaf the database refuses for itself (RefusedWrite) is not tried again, live or after a restart, and the node goes on', async () => {
    await alice.iq('set', site.jid, create('/tags/refused'));
    await alice.iq('set', site.jid, publish('/tags/refused', 'f0'));
    const { saved, positions } = memoryPositions();
    const tries = new Map<string, number>();
    const written = new Set<string>();
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        const id = String(item.attrs.id);
        if (node !== '/tags/refused') return true;
        tries.set(id, (tries.get(id) ?? 0) + 1);
        if (id === 'bad') throw new RefusedWrite('CouchDB refused bad: forbidden');
        written.add(id);
        return true;
      },
      retract: async () => undefined,
    };
    await withPartner(site, 'pubsub.beta.test', sink, { positions }, async () => {
      await until(() => written.has('f0') && saved.has(`${site.jid} /tags/refused`), 'the first catch-up');
      await alice.iq('set', site.jid, publish('/tags/refused', 'bad'));
      await alice.iq('set', site.jid, publish('/tags/refused', 'f1'));
      await until(() => written.has('f1'), 'f1 written live after the refused one');
      await new Promise((r) => setTimeout(r, 3_000)); // a retry would come after 2 s
      assert.equal(tries.get('bad'), 1, 'the refused leaf was not tried again while running');
    });
    // The position stayed before it (held): a restart replays it once, and the node is followed on.
    await withPartner(site, 'pubsub.beta.test', sink, { positions }, async ({ manager }) => {
      await until(() => tries.get('bad') === 2 && manager.subscriptions().includes(`${site.jid} /tags/refused`), 'the replay after the restart, refused once more');
      await alice.iq('set', site.jid, publish('/tags/refused', 'f2'));
      await until(() => written.has('f2'), 'f2 written live after the restart');
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(tries.get('bad'), 2, 'not tried again after the replay (no retried follow)');
    });
  });
});
