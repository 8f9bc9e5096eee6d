// A partner's catch-up against the live notifications that reach it meanwhile
// (src/replication/follow-delivery.ts), on the in-process wire harness. An item page or a history page
// can be older than a notification that arrived before the partner read it: a page of current
// items answered just before the site republished one of its items, or a history page (read one
// ahead) whose entry of an item the site has republished since. The catch-up must neither stop
// at such an item's old place (the items after it were published before the subscription and
// are not notified again: they would be lost) nor apply its old version after the live one (a
// transform's upsert, unlike a CouchDB revision tree, would keep the older content).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parse, type Element } from 'ltx';
import { pageOfItems, stableAnchor, withoutSuperseded } from '../../src/replication/catch-up-rules.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { aroundRequests, create, memoryPositions, publish, startPartner, until } from './partner-fixture.ts';

/** A publish request of item `id` whose Atom title is `title` (a new version of the item). */
const republish = (node: string, id: string, title: string): string =>
  `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>${title}</title></entry></item></publish></pubsub>`;

const titleOf = (item: Element): string => item.getChild('entry')?.getChildText('title') ?? '';

/** A retract request of item `id` of `node` (XEP-0060 §7.2), with notification. */
const retract = (node: string, id: string): string => `<pubsub xmlns='${NS.PUBSUB}'><retract node='${node}' notify='true'><item id='${id}'/></retract></pubsub>`;

/** What recordingSink records for a retraction. */
const RETRACTED = '(retracted)';

/** A sink that records, per item id of `node`, the titles written (and RETRACTED) in call order. */
function recordingSink(node: string, writes: Map<string, string[]>, held?: Promise<void>): PartnerSink & { calls: () => number } {
  let calls = 0;
  return {
    calls: () => calls,
    writeItem: async (_service, n, item) => {
      if (n !== node) return true;
      calls++;
      const id = String(item.attrs.id);
      const title = titleOf(item);
      if (held) await held;
      writes.set(id, [...(writes.get(id) ?? []), title]);
      return true;
    },
    retract: async (_service, n, id) => {
      if (n === node) writes.set(id, [...(writes.get(id) ?? []), RETRACTED]);
    },
  };
}

describe("a partner's catch-up and the live notifications that overtake its pages", () => {
  let site: WireHarness;
  let alice: TestClient;

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    await site?.stop();
  });

  // s150: an item in the middle of the page; s199: the page's last item, which the next page
  // would be asked for after (a republished anchor places "after" at the end of the node); and
  // s150 retracted instead (it must not come back from the stale page).
  for (const [republished, change] of [['s150', 'republished'], ['s199', 'republished'], ['s150', 'retracted']] as const) {
    it(`an item page answered before its item ${republished} was ${change}: the catch-up reads on past it and keeps the newer state`, async () => {
      const node = `/tags/stale-${republished}-${change}`;
      const newer = change === 'retracted' ? RETRACTED : `${republished}-v2`;
      await alice.iq('set', site.jid, create(node));
      for (let i = 0; i < 250; i++) await alice.iq('set', site.jid, publish(node, `s${i}`));
      const writes = new Map<string, string[]>();
      const sink = recordingSink(node, writes);
      // The second page of items (after s99) is answered; before the partner sees the answer,
      // the site republishes an item of it and its notification is applied: the page in hand
      // is now stale.
      let overtaken = false;
      const wrap = aroundRequests(async (child, send) => {
        const res = await send();
        const after = child.getChild('set', NS.RSM)?.getChildText('after');
        if (!overtaken && child.getChild('items')?.attrs.node === node && after) {
          overtaken = true;
          await alice.iq('set', site.jid, change === 'retracted' ? retract(node, republished) : republish(node, republished, newer));
          await until(() => writes.get(republished)?.includes(newer) === true, `the ${change} ${republished}'s notification applied`);
        }
        return res;
      });
      const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink, { iq: wrap });
      try {
        // (s249, the newest item, also comes live on subscription, §6.1.7: s248 is the catch-up's.)
        await until(() => writes.has('s248'), 'the catch-up through the last page', 10_000).catch(() => undefined);
        assert.ok(overtaken, 'the second page was answered before the republication (the case under test happened)');
        const missing = Array.from({ length: 250 }, (_, i) => `s${i}`).filter((id) => !writes.has(id));
        assert.deepEqual(missing, [], `every item published before the subscription written (the catch-up did not stop at or page after ${republished})`);
        assert.equal(writes.get(republished)?.at(-1), newer, `${republished} ends ${change} (written: ${JSON.stringify(writes.get(republished))})`);
      } finally {
        await manager.stop();
        await harness.stop();
      }
    });
  }

  it('a history page read ahead holds an older entry of an item republished live: the replay does not apply it after the live one', async () => {
    const node = '/tags/replayed';
    await alice.iq('set', site.jid, create(node));
    await alice.iq('set', site.jid, publish(node, 'h0'));
    const { saved, positions } = memoryPositions();
    const first = await startPartner(site, 'pubsub.beta.test', recordingSink(node, new Map()), { positions });
    await until(() => saved.has(`${site.jid} ${node}`), 'the history position saved by the first run');
    await first.manager.stop();
    await first.harness.stop();
    // While the partner is down the site publishes 250 entries; the partner comes back and
    // replays them from the history (its first page held in the sink, the next read ahead)
    // while the site republishes h150, an item of that next page.
    for (let i = 1; i <= 250; i++) await alice.iq('set', site.jid, publish(node, `h${i}`));
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const writes = new Map<string, string[]>();
    const sink = recordingSink(node, writes, held);
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink, { positions });
    try {
      await until(() => sink.calls() > 0, 'the history replay writing its first page');
      const before = sink.calls();
      await alice.iq('set', site.jid, republish(node, 'h150', 'h150-v2'));
      await until(() => sink.calls() > before, "the republished h150's notification handed to the sink");
      release();
      await until(() => writes.has('h250') && writes.get('h150')?.includes('h150-v2') === true, 'every entry written');
      await new Promise((r) => setTimeout(r, 300)); // a late write of the old h150 would come now
      const missing = Array.from({ length: 250 }, (_, i) => `h${i + 1}`).filter((id) => !writes.has(id));
      assert.deepEqual(missing, [], 'every entry published while down written');
      assert.deepEqual(writes.get('h150'), ['h150-v2'], 'h150 written once, at its newer version (its older history entry not applied after it)');
    } finally {
      release();
      await manager.stop();
      await harness.stop();
    }
  });

  it('a notification that lags behind the history it is already in supersedes nothing read after it: a newer entry is still applied', async () => {
    // A restart replays /tags/lag from its history while the partner's notifications lag (a
    // digest window, a busy outbox): h150's second version reaches it live only after the replay
    // has read its entry, and a third version follows in the history. The live second version
    // must not keep the replay from applying the third. Flow control is on (bound 1, a slow
    // write on another node keeps it full), so the third version's own notification is left to
    // the history, and a position moved past its entry would lose it.
    const node = '/tags/lag';
    const other = '/tags/lag-other';
    await alice.iq('set', site.jid, create(node));
    await alice.iq('set', site.jid, create(other));
    await alice.iq('set', site.jid, publish(node, 'h0'));
    await alice.iq('set', site.jid, publish(other, 'o0'));
    const { saved, positions } = memoryPositions();
    const first = await startPartner(site, 'pubsub.beta.test', recordingSink(node, new Map()), { positions });
    await until(() => saved.has(`${site.jid} ${node}`) && saved.has(`${site.jid} ${other}`), 'both positions saved by the first run');
    await first.manager.stop();
    await first.harness.stop();
    for (let i = 1; i <= 250; i++) await alice.iq('set', site.jid, publish(node, `h${i}`));

    const writes = new Map<string, string[]>();
    let releaseOther: () => void = () => undefined;
    const otherHeld = new Promise<void>((resolve) => (releaseOther = resolve));
    const own = recordingSink(node, writes);
    const sink: PartnerSink = {
      writeItem: async (service, n, item, partner) => {
        if (n === other && titleOf(item) === 'slow') await otherHeld;
        return own.writeItem(service, n, item, partner);
      },
      retract: async () => undefined,
    };
    // Notifications wait in `lagging` until let through, in order.
    const lagging: Array<() => void> = [];
    let open = false;
    const gate = (_stanza: Element, deliver: () => void): void => (open ? deliver() : void lagging.push(deliver));
    const letThrough = (n: number): void => {
      for (const deliver of lagging.splice(0, n)) deliver();
    };
    let queries = 0;
    let fourthAnswered = false;
    const wrap = aroundRequests(async (child, send) => {
      const history = child.name === 'query' && child.attrs.xmlns === NS.MAM && child.attrs.node === node;
      if (history && ++queries === 3) {
        // Before the third history page is read: a slow write on the other node, then h150's
        // second version and 98 more entries, all notified late.
        await alice.iq('set', site.jid, publish(other, 'slow'));
        await alice.iq('set', site.jid, republish(node, 'h150', 'v2'));
        for (let i = 1; i <= 98; i++) await alice.iq('set', site.jid, publish(node, `f${i}`));
      }
      if (history && queries === 4) {
        await until(() => writes.has('f49'), 'the third page applied (h150 v2 read from the history)');
        letThrough(2); // the slow write and h150 v2: now live, after their entries were read
        await alice.iq('set', site.jid, republish(node, 'h150', 'v3')); // notified late too
      }
      const res = await send();
      if (history && queries === 4) fourthAnswered = true;
      return res;
    });
    const { harness, manager } = await startPartner(site, 'pubsub.beta.test', sink, { positions, gate, iq: wrap, liveBacklogItems: 1 });
    try {
      await until(() => fourthAnswered && writes.has('f98'), 'the fourth history page applied');
      open = true;
      letThrough(lagging.length); // h150 v3's notification, among others
      releaseOther();
      await until(() => writes.get('h150')?.at(-1) === 'v3', 'h150 at its third version', 10_000).catch(() => undefined);
      assert.equal(writes.get('h150')?.at(-1), 'v3', `h150 ends at its third version (written: ${JSON.stringify(writes.get('h150'))})`);
    } finally {
      releaseOther();
      await manager.stop();
      await harness.stop();
    }
  });
});

describe('pageOfItems, withoutSuperseded, stableAnchor (the rules the catch-up applies)', () => {
  const items = (ids: string[]): Element[] => ids.map((id) => parse(`<item xmlns='${NS.PUBSUB}' id='${id}'/>`) as Element);
  const ids = (els: Element[]): string[] => els.map((e) => String(e.attrs.id));

  it('takes untouched items, skips items touched after the page was asked for, stops at one touched before', () => {
    const touched = new Map([
      ['b', 5],
      ['d', 2],
    ]);
    const r = pageOfItems(items(['a', 'b', 'c', 'd', 'e']), touched, 3);
    assert.deepEqual(ids(r.page), ['a', 'c'], 'b (touched at 5, after the request at 3) skipped; stops at d (touched at 2)');
    assert.equal(r.reached, true);
    assert.equal(r.skipped, 1);
    const none = pageOfItems(items(['a', 'b']), undefined, 0);
    assert.deepEqual([ids(none.page), none.reached], [['a', 'b'], false], 'nothing known of live events: every item taken');
    const later = pageOfItems(items(['a', 'b', 'c']), new Map([['b', 0]]), 0);
    assert.deepEqual([ids(later.page), later.reached, later.skipped], [['a', 'c'], false, 1], 'touched only after the request: skipped, read on');
  });

  it('drops the publications and retractions of touched items from a history entry, keeps the rest', () => {
    const event = parse(`<event xmlns='${NS.PUBSUB_EVENT}'><items node='n'><item id='a'/><retract id='b'/><item id='c'/></items></event>`) as Element;
    const { event: kept, dropped } = withoutSuperseded(event, new Set(['b', 'c']));
    assert.equal(dropped, 2);
    assert.deepEqual(
      kept?.getChild('items')?.getChildElements().map((c) => `${c.name} ${String(c.attrs.id)}`),
      ['item a'],
    );
    assert.equal(kept?.getChild('items')?.attrs.node, 'n');
    assert.equal(withoutSuperseded(event, new Set(['z'])).event, event, 'nothing touched: the same event');
  });

  it('a page anchor is the newest item read that no live event touched', () => {
    const anchors = ['a', 'b', 'c', 'd'];
    assert.equal(stableAnchor(anchors, new Map([['d', 0], ['c', 4]])), 'b');
    assert.deepEqual(anchors, ['a', 'b'], 'the touched ones dropped from the end');
    assert.equal(stableAnchor(['a'], new Map([['a', 0]])), undefined, 'none left: page from the start');
    assert.equal(stableAnchor(['a', 'b'], undefined), 'b');
  });
});
