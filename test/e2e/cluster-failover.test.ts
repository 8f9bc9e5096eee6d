// Three Hermod processes serve one component JID on ejabberd (which balances the component's
// traffic over the three connections) and share one CouchDB-API store (pouchdb-server). Under
// publish load the process holding the work lease is killed with SIGKILL. Every publication
// acknowledged to its publisher is stored; the subscriber is notified of every one (those the
// dead process had journaled and the server had not routed are delivered by the survivor that
// adopts its journal) and of none twice but those the survivor sent again (at least once: XEP-0114
// has no acknowledgements); the survivors keep serving; the lease moves to a survivor, which
// runs item expiry from then on; `hermod status` shows the members and the lease holder.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import { clusterStatusOf, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { eventOf, eventually, isItemEvent, PUBSUB, type TestClient } from './client.ts';
import { configure, create, publish, subscribe, useSite } from './fixtures.ts';

const KILL_AFTER_ACKS = 150;
const AFTER_KILL_ACKS = 100;

/** Item ids of a node's notifications a client received (publications or retractions), with repeats. */
const notified = (client: TestClient, node: string, kind: 'item' | 'retract'): string[] =>
  client.received((m: Element) => eventOf(m)?.getChild('items')?.attrs.node === node).flatMap((m) => eventOf(m)?.getChild('items')?.getChildren(kind).map((i) => i.attrs.id as string) ?? []);

const repeated = (ids: string[]): string[] => ids.filter((id, i) => ids.indexOf(id) !== i);

describe('three Hermods on one store, one killed under load', { timeout: 300_000 }, () => {
  const site = useSite({ name: 'cluster', prosody: false, couches: 1 });
  let home: ServerInfo;
  const hermods: HermodProcess[] = [];
  let alice: TestClient;
  let bob: TestClient;
  let SVC: string;

  before(async () => {
    home = site.beta;
    SVC = home.componentJid;
    const store = { backend: 'couchdb', couchdb: { url: site.couch().url, db: 'hermod' } };
    for (const name of ['h1', 'h2', 'h3']) hermods.push(await site.hermod({ server: home, name, logLevel: 'info', extra: { store, cluster: { leaseSeconds: 3 } } }));
    [alice, bob] = await Promise.all([site.user(home, 'alice'), site.user(home, 'bob')]);
  });

  it('loses nothing acknowledged, notifies once, keeps serving, and hands the lease (item expiry) over', async () => {
    // hermod status: three members, one lease holder.
    const view = await eventually(async () => {
      const c = await clusterStatusOf(hermods[0] as HermodProcess);
      return c && c.members.filter((m) => m.alive).length === 3 && c.leases[0]?.holder ? c : undefined;
    }, 'three members and a lease holder in hermod status', 30_000);
    const holder = view.leases[0]?.holder as string;
    const leaders = [];
    for (const h of hermods) if ((await clusterStatusOf(h))?.leases[0]?.heldHere) leaders.push(h);
    assert.equal(leaders.length, 1, 'exactly one process holds the work lease');
    const leader = leaders[0] as HermodProcess;
    const survivors = hermods.filter((h) => h !== leader);

    await alice.iq('set', SVC, create('load', { max_items: 'max' }));
    await bob.iq('set', SVC, subscribe('load', bob.bare));
    await alice.iq('set', SVC, create('exp', { item_expire: '2', notify_retract: 'true' }));
    await bob.iq('set', SVC, subscribe('exp', bob.bare));

    const acked: string[] = [];
    let killedAt: number | undefined;
    let killing: Promise<void> | undefined;
    const publisher = async (w: number): Promise<void> => {
      for (let n = 0; killedAt === undefined || acked.length < killedAt + AFTER_KILL_ACKS; n++) {
        const id = `w${w}-${n}`;
        try {
          await alice.iq('set', SVC, publish('load', id), 8_000);
          acked.push(id);
        } catch (err) {
          if (!killing) throw new Error(`publish failed before the kill (worker ${w}, #${n}): ${String(err)}`);
          continue; // went to the killed process: not acknowledged (it may or may not be stored)
        }
        if (acked.length >= KILL_AFTER_ACKS && !killing) {
          killedAt = acked.length;
          killing = leader.kill();
        }
      }
    };
    await Promise.all([0, 1, 2, 3].map(publisher));
    await killing;

    // The lease moved to a survivor.
    const after = await eventually(async () => {
      const c = await clusterStatusOf(survivors[0] as HermodProcess);
      return c && c.leases[0]?.holder && c.leases[0].holder !== holder && !c.members.some((m) => m.id === holder) ? c : undefined;
    }, 'the lease held by a survivor and the dead member gone', 30_000);
    assert.equal(after.members.length, 2);

    // Every acknowledged publication is stored: asked for by id (§6.5.8), 50 at a time.
    const stored: string[] = [];
    for (let i = 0; i < acked.length; i += 50) {
      const ids = acked.slice(i, i + 50).map((id) => `<item id='${id}'/>`).join('');
      const reply = await alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='load'>${ids}</items></pubsub>`);
      stored.push(...(reply.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((it) => it.attrs.id as string) ?? []));
    }
    assert.deepEqual(acked.filter((id) => !stored.includes(id)), [], `acknowledged but lost (${acked.length} acknowledged, ${stored.length} found)`);

    // The subscriber gets every acknowledged publication (the dead process's journal adopted).
    await alice.iq('set', SVC, publish('load', 'marker'));
    await bob.waitForMessage(isItemEvent('load', 'marker'), 30_000, 'marker after the kill');
    await eventually(() => acked.every((id) => notified(bob, 'load', 'item').includes(id)) || undefined, 'every acknowledged item notified', 60_000).catch(() => undefined);
    const got = notified(bob, 'load', 'item');
    assert.deepEqual(acked.filter((id) => !got.includes(id)), [], 'acknowledged but never notified');
    // XEP-0114 has no acknowledgements: what the dead process had written and the server had not
    // yet routed (its barrier not back) may or may not have reached the server, so the survivor
    // that adopts its journal sends it again (at least once, same item ids). Only those may repeat.
    const adoptions = (await Promise.all(survivors.map((h) => h.log()))).flat().filter((l) => l.msg === 'notification journal of another member adopted' && l.member === holder);
    assert.equal(adoptions.length, 1, "the dead member's journal adopted once");
    const resent = Number(adoptions[0]?.resent);
    assert.ok(repeated(got).length <= resent, `notified twice for one publication: ${repeated(got).join(' ')} (the survivor sent ${resent} notifications again)`);

    // Item expiry runs in the new lease holder: an item published now is retracted.
    await alice.iq('set', SVC, publish('exp', 'gone-soon'));
    await bob.waitForMessage((m) => eventOf(m)?.getChild('items')?.attrs.node === 'exp' && (eventOf(m)?.getChild('items')?.getChildren('retract').some((r) => r.attrs.id === 'gone-soon') ?? false), 30_000, 'the expiry retraction');
    assert.deepEqual(repeated(notified(bob, 'exp', 'retract')), [], 'one retraction per expired item');
  });
});
