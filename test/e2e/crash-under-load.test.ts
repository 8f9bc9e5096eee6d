// kill -9 under publish load, with the real hermod process on real Prosody: four publishers
// run concurrently (explicit and generated item ids) while a subscriber listens; Hermod is
// killed with SIGKILL mid-stream and restarted. Every publication that was acknowledged with an
// IQ result is in the node afterwards, no item id appears twice, and the subscriber was never
// notified twice of one item.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import { startXmppEnv, type ServerInfo, type XmppEnv } from '../../src/devenv/index.ts';
import { eventOf, eventually, PUBSUB, TestClient } from './client.ts';
import { startHermodProcess, type HermodProcess } from './hermod-process.ts';

const KILL_AFTER_ACKS = 200;
const entry = (text: string): string => `<entry xmlns='http://www.w3.org/2005/Atom'><title>${text}</title></entry>`;

describe('kill -9 under publish load', { timeout: 120_000 }, () => {
  let env: XmppEnv;
  let home: ServerInfo;
  let dir: string;
  let hermod: HermodProcess | undefined;
  let alice: TestClient;
  let bob: TestClient;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'hermod-crash-'));
    env = await startXmppEnv({ ejabberd: false });
    home = env.alpha as ServerInfo;
    hermod = await startHermodProcess({ server: home, dir });
    [alice, bob] = await Promise.all([TestClient.create(env, home, 'alice'), TestClient.create(env, home, 'bob')]);
  });

  after(async () => {
    await Promise.all([alice?.stop(), bob?.stop()]);
    await hermod?.stop().catch(() => hermod?.kill());
    await env?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
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

    hermod = await startHermodProcess({ server: home, dir });
    const items = await eventually(() => alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='load'/></pubsub>`), 'items after restart');
    const stored = items.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id as string) ?? [];
    assert.equal(new Set(stored).size, stored.length, 'no item id twice');
    const missing = acked.filter((id) => !stored.includes(id));
    assert.deepEqual(missing, [], `acknowledged but lost (${acked.length} acknowledged, ${stored.length} stored)`);
    assert.ok(stored.length <= acked.length + 4, 'at most the publications in flight at the kill were stored unacknowledged');

    const notified = bob.received((m: Element) => eventOf(m)?.getChild('items')?.attrs.node === 'load').flatMap((m) => eventOf(m)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id as string) ?? []);
    assert.equal(new Set(notified).size, notified.length, 'no notification twice for one item');
    // After the restart the subscription still works.
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><publish node='load'><item id='after'>${entry('after')}</item></publish></pubsub>`);
    await bob.waitForMessage((m) => eventOf(m)?.getChild('items')?.getChildren('item').some((i) => i.attrs.id === 'after') ?? false, 10_000, 'notification after restart');
  });
});
