// kill -9 under publish load, with the real hermod process on real Prosody: four publishers
// run concurrently (explicit and generated item ids) while a subscriber listens; Hermod is
// killed with SIGKILL mid-stream and restarted. Every publication that was acknowledged with an
// IQ result is in the node afterwards, no item id appears twice, and the subscriber is notified
// of every one, twice only of those the restarted Hermod sent again from its journal (written
// before the kill, not yet routed by the server: at least once, XEP-0114 has no acknowledgements).

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import type { HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventOf, eventually, PUBSUB, type TestClient } from './client.ts';
import { entry, useSite } from './fixtures.ts';

const KILL_AFTER_ACKS = 200;

describe('kill -9 under publish load', { timeout: 120_000 }, () => {
  const site = useSite({ name: 'crash', ejabberd: false });
  let home: ServerInfo;
  let hermod: HermodProcess | undefined;
  let alice: TestClient;
  let bob: TestClient;

  before(async () => {
    home = site.alpha;
    hermod = await site.hermod({ server: home });
    [alice, bob] = await Promise.all([site.user(home, 'alice'), site.user(home, 'bob')]);
  });

  it('keeps every acknowledged publication, once', async () => {
    const SVC = home.componentJid;
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='load'/></pubsub>`);
    await bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='load' jid='${bob.bare}'/></pubsub>`);

    const acked: string[] = [];
    let killed = false;
    let killing: Promise<void> | undefined;
    const publisher = async (w: number): Promise<void> => {
      for (let n = 0; !killed; n++) {
        const explicit = w % 2 === 0 ? `w${w}-${n}` : undefined;
        try {
          const reply = await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><publish node='load'><item${explicit ? ` id='${explicit}'` : ''}>${entry(`w${w} n${n}`)}</item></publish></pubsub>`, 5_000);
          const id = explicit ?? (reply.getChild('pubsub', PUBSUB)?.getChild('publish')?.getChild('item')?.attrs.id as string | undefined);
          assert.ok(id, 'the result names the item');
          acked.push(id);
        } catch {
          if (!killing) throw new Error(`publish failed before the kill (worker ${w}, #${n})`);
          return; // not acknowledged: may or may not have been stored
        }
        if (acked.length >= KILL_AFTER_ACKS && !killing) {
          killing = (hermod as HermodProcess).kill().then(() => {
            killed = true;
          });
        }
      }
    };
    await Promise.all([0, 1, 2, 3].map(publisher));
    await killing;
    assert.ok(acked.length >= KILL_AFTER_ACKS);

    hermod = await site.hermod({ server: home });
    const items = await eventually(() => alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='load'/></pubsub>`), 'items after restart');
    const stored = items.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id as string) ?? [];
    assert.equal(new Set(stored).size, stored.length, 'no item id twice');
    const missing = acked.filter((id) => !stored.includes(id));
    assert.deepEqual(missing, [], `acknowledged but lost (${acked.length} acknowledged, ${stored.length} stored)`);
    assert.ok(stored.length <= acked.length + 4, 'at most the publications in flight at the kill were stored unacknowledged');

    const notifiedIds = (): string[] => bob.received((m: Element) => eventOf(m)?.getChild('items')?.attrs.node === 'load').flatMap((m) => eventOf(m)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id as string) ?? []);
    await eventually(() => acked.every((id) => notifiedIds().includes(id)) || undefined, 'every acknowledged item notified', 30_000).catch(() => undefined);
    const notified = notifiedIds();
    assert.deepEqual(acked.filter((id) => !notified.includes(id)), [], 'acknowledged but never notified');
    const resent = (await hermod.log()).filter((l) => l.msg === 'undelivered notifications queued from the journal').reduce((n, l) => n + Number(l.stanzas), 0);
    const twice = notified.filter((id, i) => notified.indexOf(id) !== i);
    assert.ok(twice.length <= resent, `notified twice: ${twice.join(' ')} (${resent} sent again from the journal)`);
    // After the restart the subscription still works.
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><publish node='load'><item id='after'>${entry('after')}</item></publish></pubsub>`);
    await bob.waitForMessage((m) => eventOf(m)?.getChild('items')?.getChildren('item').some((i) => i.attrs.id === 'after') ?? false, 10_000, 'notification after restart');
  });
});
