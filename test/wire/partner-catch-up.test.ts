// A partner's catch-ups (src/replication/partners.ts), on the in-process wire harness: a node with
// a long catch-up (the sink holds its first page) does not hold back the subscription to the
// service's other nodes, and stop() ends that catch-up at its next page instead of waiting for the
// whole node (a first sync of 100 000 documents kept a stopping Hermod alive for minutes).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { startPartner } from './partner-fixture.ts';

const create = (node: string): string => `<pubsub xmlns='${NS.PUBSUB}'><create node='${node}'/></pubsub>`;
const publish = (node: string, id: string): string =>
  `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>${id}</title></entry></item></publish></pubsub>`;

/** Waits (polling) until `done` holds; fails after 10 s. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (const start = Date.now(); !done(); await new Promise((r) => setTimeout(r, 10))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

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
});
