// Flow control for a partner's live notifications (src/replication/follow-delivery.ts,
// leaveToHistory/drain), on the in-process wire harness: when the partner's database falls behind
// a site that keeps publishing, the partner holds at most `liveBacklogItems` live items waiting
// for it and leaves the rest to the node's history (XEP-0313), which it reads back page by page
// once the database has caught up, with delivery paused (pubsub#deliver) meanwhile. Nothing is
// lost, also across a stop in the middle, and delivery comes back on.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SubscriptionClaims } from '../../src/replication/subscription-claims.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { captureLog } from '../unit/capture-log.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { aroundRequests, create, managerOn, memoryPositions, publish, startPartner, until } from './partner-fixture.ts';


/** A sink for one node that counts writes per item and the writes waiting, and can be held shut (a database that fell behind). */
function slowSink(node: string) {
  let gate: Promise<void> | undefined;
  let open: () => void = () => undefined;
  const state = { waiting: 0, peak: 0, writes: new Map<string, number>() };
  const sink: PartnerSink = {
    writeItem: async (_service, n, item) => {
      if (n !== node) return true;
      state.waiting++;
      state.peak = Math.max(state.peak, state.waiting);
      try {
        await gate;
      } finally {
        state.waiting--;
      }
      const id = String(item.attrs.id);
      state.writes.set(id, (state.writes.get(id) ?? 0) + 1);
      return true;
    },
    retract: async () => undefined,
  };
  return {
    sink,
    state,
    shut: () => (gate = new Promise<void>((resolve) => (open = resolve))),
    open: () => {
      gate = undefined;
      open();
    },
  };
}

describe("a partner's flow control: live notifications its database cannot take yet are read back from the history", () => {
  let site: WireHarness;
  let alice: TestClient;
  const { saved, positions } = memoryPositions();

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    await site?.stop();
  });

  it('holds at most liveBacklogItems items waiting for the sink, then writes every item from the history', async () => {
    await alice.iq('set', site.jid, create('/tags/flood'));
    await alice.iq('set', site.jid, publish('/tags/flood', 'f0'));
    const slow = slowSink('/tags/flood');
    const notified: string[] = [];
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', slow.sink, {
      positions,
      liveBacklogItems: 10,
      digestMs: 0,
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        if (items?.attrs.node === '/tags/flood') for (const item of items.getChildren('item')) notified.push(String(item.attrs.id));
      },
    });
    try {
      await until(() => slow.state.writes.has('f0') && saved.has(`${site.jid} /tags/flood`), 'the catch-up of the first item and its history position');
      slow.shut();
      for (let i = 1; i <= 300; i++) await alice.iq('set', site.jid, publish('/tags/flood', `f${i}`));
      await new Promise((r) => setTimeout(r, 200)); // the last notifications arrive
      assert.ok(slow.state.peak <= 10, `at most 10 live items waited for the database (${slow.state.peak} did; 300 were published)`);
      assert.ok(notified.length < 150, `delivery paused (pubsub#deliver) while the history has them: ${notified.length} of 300 notified`);
      slow.open();
      await until(() => slow.state.writes.size === 301, 'every item written once the database caught up');
      assert.ok(slow.state.peak <= 100, `read back a history page at a time (${slow.state.peak} writes waited at most)`);
      // Live again: a new publication is written without another history read.
      await alice.iq('set', site.jid, publish('/tags/flood', 'f301'));
      await until(() => slow.state.writes.has('f301'), 'a publication after the drain, written as it arrives');
    } finally {
      slow.open();
      await manager.stop();
      await harness.stop();
    }
  });

  it('a service without history (no XEP-0313): beyond liveBacklogItems only the item ids are kept, the items read by id at our pace; each item written as it is now, a retracted one retracted', async () => {
    await alice.iq('set', site.jid, create('/tags/nomam'));
    await alice.iq('set', site.jid, publish('/tags/nomam', 'h0'));
    const slow = slowSink('/tags/nomam');
    const retracted: string[] = [];
    const sink = { ...slow.sink, retract: async (_s: string, n: string, id: string) => void (n === '/tags/nomam' && retracted.push(id)) };
    const byId: number[] = [];
    // The partner's service, as we see it, keeps no history: MAM taken out of its disco#info.
    const noHistory = aroundRequests(async (child, send) => {
      const answer = await send();
      if (child.getNS() === NS.DISCO_INFO) for (const f of answer.getChild('query', NS.DISCO_INFO)?.getChildren('feature') ?? []) if (f.attrs.var === NS.MAM) f.attrs.var = 'urn:example:not-mam';
      const items = child.getChild('items');
      if (items && items.getChildren('item').length > 0) byId.push(items.getChildren('item').length);
      return answer;
    });
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink, { liveBacklogItems: 10, digestMs: 0, iq: noHistory });
    try {
      await until(() => slow.state.writes.has('h0'), 'the first item, from the current items');
      slow.shut();
      for (let i = 1; i <= 200; i++) await alice.iq('set', site.jid, publish('/tags/nomam', `h${i}`));
      await alice.iq('set', site.jid, `<pubsub xmlns='${NS.PUBSUB}'><retract node='/tags/nomam' notify='true'><item id='h7'/></retract></pubsub>`);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(slow.state.peak <= 10, `at most 10 live items waited for the database (${slow.state.peak} did; 200 were published)`);
      slow.open();
      const missing = (): string[] => Array.from({ length: 201 }, (_, i) => `h${i}`).filter((id) => id !== 'h7' && !slow.state.writes.has(id));
      await until(() => missing().length === 0 && retracted.includes('h7'), 'every item written (read by id), the retracted one retracted').catch((err: unknown) => {
        throw new Error(`${String(err)}: missing ${missing().slice(0, 10).join(' ')} (${missing().length}), retracted ${retracted.join(' ')}`);
      });
      assert.ok(byId.length > 0 && byId.every((n) => n <= 100), `read by id, at most 100 a request: ${byId.join(', ')}`);
      // Live again: a new publication is written as it arrives.
      await alice.iq('set', site.jid, publish('/tags/nomam', 'h201'));
      await until(() => slow.state.writes.has('h201'), 'a publication after the reads, written as it arrives');
    } finally {
      slow.open();
      await manager.stop();
      await harness.stop();
    }
  });

  it('a service without history that refuses reads by id: the ids kept are dropped and the node followed afresh, its current items written', async () => {
    await alice.iq('set', site.jid, create('/tags/nomam2'));
    await alice.iq('set', site.jid, publish('/tags/nomam2', 'k0'));
    const slow = slowSink('/tags/nomam2');
    const noHistoryNoIds = aroundRequests(async (child, send) => {
      const items = child.getChild('items');
      if (items?.attrs.node === '/tags/nomam2' && items.getChildren('item').length > 0) throw new IqError('forbidden', undefined, 'no reads by id here', 'pubsub.alpha.test', 'auth');
      const answer = await send();
      if (child.getNS() === NS.DISCO_INFO) for (const f of answer.getChild('query', NS.DISCO_INFO)?.getChildren('feature') ?? []) if (f.attrs.var === NS.MAM) f.attrs.var = 'urn:example:not-mam';
      return answer;
    });
    const log = captureLog();
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', slow.sink, { liveBacklogItems: 10, digestMs: 0, iq: noHistoryNoIds, log });
    try {
      await until(() => slow.state.writes.has('k0'), 'the first item');
      slow.shut();
      for (let i = 1; i <= 60; i++) await alice.iq('set', site.jid, publish('/tags/nomam2', `k${i}`));
      await new Promise((r) => setTimeout(r, 200));
      slow.open();
      await until(() => Array.from({ length: 61 }, (_, i) => `k${i}`).every((id) => slow.state.writes.has(id)), 'every item written: the live ones, then the current items of the node followed afresh');
      assert.ok(log.lines.some((l) => /following the node again/.test(l.msg)), 'the give-up is logged');
    } finally {
      slow.open();
      await manager.stop();
      await harness.stop();
    }
  });

  it('bounds the live notifications that arrive while a first follow still catches up on the items', async () => {
    await alice.iq('set', site.jid, create('/tags/busy'));
    for (let i = 0; i < 250; i++) await alice.iq('set', site.jid, publish('/tags/busy', `b${i}`));
    const slow = slowSink('/tags/busy');
    slow.shut(); // the catch-up's first page waits for the database
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', slow.sink, { positions, liveBacklogItems: 10, digestMs: 0 });
    try {
      await until(() => slow.state.waiting > 0, "the catch-up's first page handed to the database");
      for (let i = 250; i < 550; i++) await alice.iq('set', site.jid, publish('/tags/busy', `b${i}`));
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(slow.state.peak <= 110, `a catch-up page and at most 10 live items waited (${slow.state.peak} did; 300 were published meanwhile)`);
      slow.open();
      await until(() => slow.state.writes.size === 550, 'every item written: the catch-up, then the history from before our subscription');
    } finally {
      slow.open();
      await manager.stop();
      await harness.stop();
    }
  });

  it('a stop while notifications are left to the history loses nothing: the next start replays them', async () => {
    await alice.iq('set', site.jid, create('/tags/flood2'));
    await alice.iq('set', site.jid, publish('/tags/flood2', 'g0'));
    const slow = slowSink('/tags/flood2');
    const first = await startPartner(site, 'pubsub.beta.test', slow.sink, { positions, liveBacklogItems: 10, digestMs: 0 });
    try {
      await until(() => slow.state.writes.has('g0') && saved.has(`${site.jid} /tags/flood2`), 'the catch-up of the first item and its history position');
      slow.shut();
      for (let i = 1; i <= 60; i++) await alice.iq('set', site.jid, publish('/tags/flood2', `g${i}`));
      await new Promise((r) => setTimeout(r, 200));
      await first.manager.stop(); // returns though the database still holds the live writes
    } finally {
      slow.open();
      await first.manager.stop();
      await first.harness.stop();
    }
    const again = slowSink('/tags/flood2');
    const second = await startPartner(site, 'pubsub.beta.test', again.sink, { positions, liveBacklogItems: 10, digestMs: 0 });
    try {
      await until(() => new Set([...slow.state.writes.keys(), ...again.state.writes.keys()]).size === 61, 'every item written by the first run or replayed by the second');
      // The first run paused delivery and did not live to resume it: the second turned it back on.
      await alice.iq('set', site.jid, publish('/tags/flood2', 'g61'));
      await until(() => again.state.writes.has('g61'), 'a publication after the restart, notified and written');
    } finally {
      await second.manager.stop();
      await second.harness.stop();
    }
  });
  it('a subscription the other replication on the JID follows too is not paused: it keeps getting notifications, and every item is written here', async () => {
    await alice.iq('set', site.jid, create('/tags/shared-flood'));
    await alice.iq('set', site.jid, publish('/tags/shared-flood', 's0'));
    const slow = slowSink('/tags/shared-flood');
    const notified: string[] = [];
    const claims = new SubscriptionClaims();
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', slow.sink, {
      positions,
      liveBacklogItems: 10,
      digestMs: 0,
      claims,
      onEvent: (stanza) => {
        const items = stanza.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
        if (items?.attrs.node === '/tags/shared-flood') for (const item of items.getChildren('item')) notified.push(String(item.attrs.id));
      },
    });
    // Midgard's replication, say, following the same node through the same subscription.
    const other = managerOn(site, harness, { writeItem: async () => true, retract: async () => undefined }, { follow: ['/tags/shared-flood'], offers: () => false, digestMs: 0, claims });
    try {
      await until(() => slow.state.writes.has('s0') && saved.has(`${site.jid} /tags/shared-flood`) && other.subscriptions().length === 1, 'both following, the first item written');
      slow.shut();
      for (let i = 1; i <= 300; i++) await alice.iq('set', site.jid, publish('/tags/shared-flood', `s${i}`));
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(slow.state.peak <= 10, `at most 10 live items waited for the database (${slow.state.peak} did)`);
      assert.equal(new Set(notified.filter((id) => id !== 's0')).size, 300, 'delivery not paused: the other replication gets every notification');
      slow.open();
      await until(() => slow.state.writes.size === 301, 'every item written here, from the history');
    } finally {
      slow.open();
      await other.stop();
      await manager.stop();
      await harness.stop();
    }
  });
});
