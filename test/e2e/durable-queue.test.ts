// The durable notification queue, end to end with real processes: Hermod (the real `hermod
// start` process) attached to ejabberd, subscribers on ejabberd. Nodes use notification_type
// `normal`, so that ejabberd keeps what arrives for a subscriber while it is logged out (the
// restart logs everyone out) in its offline storage. (1) ejabberd is stopped in the middle of a
// large fan-out and started again: every subscriber gets every acknowledged item, and none twice
// in one session (across the restart an item routed just before the stop may come again). (2) Notifications produced while ejabberd is down (item expiry retractions) are queued;
// Hermod is then killed with SIGKILL, or stopped with SIGTERM, and started again: after ejabberd
// is back every subscriber gets each retraction exactly once.

import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import type { Element } from 'ltx';
import { hermodCli, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { eventOf, eventually, isItemEvent, PUBSUB, type TestClient } from './client.ts';
import { configure, publish, useSite } from './fixtures.ts';

const SUBSCRIBERS = 4;
const ITEMS = 400;
const PAYLOAD = 'x'.repeat(2000);

async function statusOf(configFile: string): Promise<{ connection: string; queues: { outboxPending: number } } | undefined> {
  const r = await hermodCli('status', '--config', configFile, '--json');
  return r.code === 0 ? (JSON.parse(r.stdout) as { connection: string; queues: { outboxPending: number } }) : undefined;
}

/** Item ids a subscriber was notified of on a node (publications, or retractions), with repeats. */
function notified(sessions: TestClient[], node: string, kind: 'item' | 'retract'): string[] {
  return sessions.flatMap((client) => client
    .received((m: Element) => eventOf(m)?.getChild('items')?.attrs.node === node)
    .flatMap((m) => eventOf(m)?.getChild('items')?.getChildren(kind).map((i) => i.attrs.id as string) ?? []));
}

function duplicates(ids: string[]): string[] {
  const seen = new Set<string>();
  return ids.filter((id) => (seen.has(id) ? true : (seen.add(id), false)));
}

describe('durable notification queue', { timeout: 240_000 }, () => {
  const site = useSite({ name: 'durable', prosody: false });
  let home: ServerInfo;
  let hermod: HermodProcess | undefined;
  let alice: TestClient;
  /** The current session of each subscriber. */
  const subs: TestClient[] = [];
  /** Every session each subscriber had (a server restart logs them out). */
  const sessions: TestClient[][] = [];
  let SVC: string;

  before(async () => {
    home = site.beta;
    SVC = home.componentJid;
    hermod = await site.hermod({ server: home });
    alice = await site.user(home, 'alice');
    for (let i = 0; i < SUBSCRIBERS; i++) {
      subs.push(await site.user(home, `sub${i}`));
      sessions.push([subs[i] as TestClient]);
    }
  });

  /** Everyone logs in again after the server restart. */
  async function loginAgain(): Promise<void> {
    await alice.stop();
    alice = await site.user(home, 'alice', `again${Date.now()}`);
    for (let i = 0; i < SUBSCRIBERS; i++) {
      await subs[i]?.stop();
      subs[i] = await site.user(home, `sub${i}`, `again${Date.now()}`);
      sessions[i]?.push(subs[i] as TestClient);
    }
  }

  /**
   * What Hermod sent on reconnecting (or on starting again) may have reached the server while
   * subscriber n's new session was logging in (the subscribers log in one after another, sub3
   * last): ejabberd then stores it offline after the session took its offline messages. Stored
   * for the user is delivered as far as XEP-0114 goes: unless `complete` holds already, one more
   * session of the user picks it up (waited for up to 10 s).
   */
  async function pickUpStoredOffline(n: number, complete: () => boolean): Promise<void> {
    if (complete()) return;
    const all = sessions[n] as TestClient[];
    all.push(await site.user(home, `sub${n}`, `offline${Date.now()}`));
    await eventually(() => complete() || undefined, `sub${n}'s offline messages`, 10_000).catch(() => undefined);
  }

  async function subscribe(node: string): Promise<void> {
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='${node}'/></pubsub>`);
    await alice.iq('set', SVC, configure(node, { notification_type: 'normal', ...(node === 'fan' ? { max_items: 'max' } : { item_expire: '3', notify_retract: 'true' }) }));
    for (const s of subs) await s.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='${node}' jid='${s.bare}'/></pubsub>`);
  }

  it('XMPP server stopped mid fan-out and restarted: every subscriber gets every acknowledged item, never twice in one session', async () => {
    await subscribe('fan');
    await alice.iq('set', SVC, publish('fan', 'warm'));
    await Promise.all(subs.map((s) => s.waitForMessage(isItemEvent('fan', 'warm'), 30_000, 'first notification')));

    const onlineBefore = (await (hermod as HermodProcess).log()).filter((l) => l.msg === 'component online').length;
    const acked: string[] = [];
    let next = 0;
    const publisher = async (): Promise<void> => {
      while (next < ITEMS) {
        const id = `i${next++}`;
        try {
          await alice.iq('set', SVC, publish('fan', id, PAYLOAD), 10_000);
          acked.push(id);
        } catch {
          return; // the server went away: not acknowledged
        }
      }
    };
    const publishing = Promise.all(Array.from({ length: 16 }, publisher));
    // Mid fan-out: the first subscriber has some of the items, not all, and their publishers have
    // their acknowledgements (a notification can overtake its publisher's IQ result).
    await eventually(() => notified(sessions[0] as TestClient[], 'fan', 'item').length >= 40 && acked.length >= 40, 'fan-out under way', 60_000);
    await site.env.stopServer(home);
    await publishing;
    assert.ok(acked.length >= 40, `${acked.length} publications acknowledged before the stop`);
    await site.env.startServer(home);
    await eventually(async () => (await (hermod as HermodProcess).log()).filter((l) => l.msg === 'component online').length > onlineBefore, 'hermod back online', 60_000);
    await loginAgain();

    // A marker published last arrives after everything queued before it.
    await alice.iq('set', SVC, publish('fan', 'marker'));
    const report: string[] = [];
    for (let n = 0; n < SUBSCRIBERS; n++) {
      await (subs[n] as TestClient).waitForMessage(isItemEvent('fan', 'marker'), 60_000, `marker at sub${n}`);
      const all = sessions[n] as TestClient[];
      await pickUpStoredOffline(n, () => acked.every((id) => notified(all, 'fan', 'item').includes(id)));
      const got = notified(all, 'fan', 'item');
      const missed = acked.filter((id) => !got.includes(id));
      // Within one session nothing comes twice; across the restart an item may: what was written
      // to the server shortly before it went away is written again (at least once, same item id).
      const twiceInOneSession = all.flatMap((session) => duplicates(notified([session], 'fan', 'item')));
      report.push(`sub${n}: missed [${missed.join(' ')}], twice in one session [${twiceInOneSession.join(' ')}], again after the restart ${duplicates(got).length}`);
      if (missed.length > 0 || twiceInOneSession.length > 0) assert.fail(`${acked.length} acknowledged; ${report.join('; ')}`);
    }
  });

  for (const how of ['kill', 'stop'] as const) {
    it(`notifications queued while the server is down survive Hermod ${how === 'kill' ? 'killed with SIGKILL' : 'stopped with SIGTERM'} and are delivered once`, async () => {
      const node = `exp-${how}`;
      await subscribe(node);
      const ids = ['e1', 'e2', 'e3'];
      for (const id of ids) await alice.iq('set', SVC, publish(node, id));
      await Promise.all(subs.map((s) => s.waitForMessage(isItemEvent(node, 'e3'), 30_000, 'publication')));

      await site.env.stopServer(home);
      // The items expire while Hermod is disconnected: their retractions wait in the queue.
      const configFile = path.join(site.dir, 'hermod.json');
      const status = await eventually(async () => {
        const st = await statusOf(configFile);
        return st && st.connection !== 'online' && st.queues.outboxPending >= SUBSCRIBERS ? st : undefined;
      }, 'retractions queued', 30_000);
      assert.ok(status.queues.outboxPending >= SUBSCRIBERS);
      if (how === 'kill') await (hermod as HermodProcess).kill();
      else assert.equal(await (hermod as HermodProcess).stop(), 0);

      await site.env.startServer(home);
      hermod = await site.hermod({ server: home });
      assert.ok(await hermod.waitForLog((l) => l.msg === 'undelivered notifications queued from the journal', 'journal replayed'));
      await loginAgain();
      // A marker published last arrives after everything queued before it.
      await alice.iq('set', SVC, publish('fan', `after-${how}`));
      for (let n = 0; n < SUBSCRIBERS; n++) {
        await (subs[n] as TestClient).waitForMessage(isItemEvent('fan', `after-${how}`), 60_000, `marker at sub${n}`);
        await pickUpStoredOffline(n, () => notified(sessions[n] as TestClient[], node, 'retract').length >= ids.length);
        assert.deepEqual(notified(sessions[n] as TestClient[], node, 'retract').sort(), ids, `sub${n}: each retraction once`);
      }
    });
  }
});
