// A partner's catch-ups (src/replication/partners.ts, follow-delivery.ts), on the in-process wire harness: a node with
// a long catch-up (the sink holds its first page) does not hold back the subscription to the
// service's other nodes, and stop() ends that catch-up at its next page instead of waiting for the
// whole node (a first sync of 100 000 documents kept a stopping Hermod alive for minutes); and a
// catch-up (the items, or the history after a restart) stops where what reached the partner live
// begins (a partner following a site that kept publishing fetched every item twice).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { create, memoryPositions, publish, startPartner, until } from './partner-fixture.ts';


describe("a partner's catch-ups: one long node does not hold back the others, and stop() does not wait for it", () => {
  let site: WireHarness;
  let alice: TestClient;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    await site?.stop();
  });

  it('follows the other node while the first is still catching up; stop() ends the catch-up after the page under way', async () => {
    await alice.iq('set', site.jid, create('/tags/big'));
    await alice.iq('set', site.jid, create('/tags/small'));
    for (let i = 0; i < 250; i++) await alice.iq('set', site.jid, publish('/tags/big', `b${i}`));
    await alice.iq('set', site.jid, publish('/tags/small', 's0'));

    // The sink holds every write of /tags/big until `release` (a slow database).
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const written: string[] = [];
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        if (node === '/tags/big') await held;
        written.push(String(item.attrs.id));
        return true;
      },
      retract: async () => undefined,
    };
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink);
    try {
      await until(() => written.includes('s0'), "the small node's item, while the big node's first page is held");
      assert.equal(written.filter((id) => id.startsWith('b')).length, 0, 'the big node is still held');
      const stopped = manager.stop();
      release();
      await stopped;
      const big = written.filter((id) => id.startsWith('b')).length;
      assert.ok(big > 0 && big < 250, `stopped after the page under way (${big} of 250 written), not after the whole node`);
    } finally {
      release();
      await manager.stop();
      await harness.stop();
    }
  });

  it('a catch-up stops at the first item that reached the partner live: every item is written once', async () => {
    await alice.iq('set', site.jid, create('/tags/stream'));
    for (let i = 0; i < 250; i++) await alice.iq('set', site.jid, publish('/tags/stream', `p${i}`));

    // The sink holds every write until `release`, so the catch-up is still on its first page
    // while the site publishes more (a partner catching up while its site keeps publishing).
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const writes = new Map<string, number>();
    let calls = 0;
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        if (node !== '/tags/stream') return true; // the first test's nodes
        calls++;
        await held;
        const id = String(item.attrs.id);
        writes.set(id, (writes.get(id) ?? 0) + 1);
        return true;
      },
      retract: async () => undefined,
    };
    const live: string[] = [];
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink, {
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        if (items?.attrs.node === '/tags/stream') for (const item of items.getChildren('item')) live.push(String(item.attrs.id));
      },
    });
    try {
      await until(() => calls > 0, 'the catch-up writing its first page (so the subscription is in force)');
      for (let i = 0; i < 3; i++) await alice.iq('set', site.jid, publish('/tags/stream', `late${i}`));
      // (The newest item, p249, also came live: sent on subscription, §6.1.7.)
      await until(() => live.filter((id) => id.startsWith('late')).length === 3, 'the three late items notified live');
      release();
      await until(() => writes.has('p249') && writes.has('late2'), 'every item written');
      await new Promise((r) => setTimeout(r, 300)); // a second write of any item would come now
      const twice = [...writes].filter(([, n]) => n > 1).map(([id]) => id);
      assert.deepEqual(twice, [], 'no item written twice (the late ones came live; the catch-up stopped before them)');
      assert.equal(writes.size, 253, 'all 250 items from before and the 3 late ones');
    } finally {
      release();
      await manager.stop();
      await harness.stop();
    }
  });

  it('a history replay after a restart stops at the first entry that reached the partner live: every item is written once', async () => {
    await alice.iq('set', site.jid, create('/tags/hist'));
    await alice.iq('set', site.jid, publish('/tags/hist', 'h0'));
    const { saved, positions } = memoryPositions();
    const hist = (w: Map<string, number>): PartnerSink => ({
      writeItem: async (_service, node, item) => {
        if (node === '/tags/hist') w.set(String(item.attrs.id), (w.get(String(item.attrs.id)) ?? 0) + 1);
        return true;
      },
      retract: async () => undefined,
    });
    // A first run follows the node and keeps its history position.
    const first = await startPartner(site, 'pubsub.beta.test', hist(new Map()), { positions });
    await until(() => saved.has(`${site.jid} /tags/hist`), 'the history position saved by the first run');
    await first.manager.stop();
    await first.harness.stop();
    // While the partner is down the site publishes 250 entries; the partner comes back and
    // replays them from its history while the site publishes 3 more.
    for (let i = 1; i <= 250; i++) await alice.iq('set', site.jid, publish('/tags/hist', `h${i}`));
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const writes = new Map<string, number>();
    let calls = 0;
    const counted = hist(writes);
    const sink: PartnerSink = {
      writeItem: async (service, node, item, partner) => {
        if (node !== '/tags/hist') return true;
        calls++;
        await held;
        return counted.writeItem(service, node, item, partner);
      },
      retract: async () => undefined,
    };
    const liveSids: string[] = [];
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink, {
      positions,
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        if (items?.attrs.node === '/tags/hist' && stanza.getChild('stanza-id', NS.SID)) liveSids.push(String(items.getChild('item')?.attrs.id));
      },
    });
    try {
      await until(() => calls > 0, 'the history replay writing its first page');
      for (let i = 0; i < 3; i++) await alice.iq('set', site.jid, publish('/tags/hist', `late${i}`));
      await until(() => liveSids.filter((id) => id.startsWith('late')).length === 3, 'the three late entries notified live, with their archive ids');
      release();
      await until(() => writes.has('h250') && writes.has('late2'), 'every entry written');
      await new Promise((r) => setTimeout(r, 300)); // a second write of any item would come now
      const twice = [...writes].filter(([, n]) => n > 1).map(([id]) => id);
      assert.deepEqual(twice, [], 'no entry written twice (the late ones came live; the replay stopped before them)');
      assert.equal(writes.size, 253, 'the 250 entries published while down and the 3 late ones');
    } finally {
      release();
      await manager.stop();
      await harness.stop();
    }
  });
});
