// Notification digests (XEP-0060 pubsub#digest, pubsub#digest_frequency): the subscription
// options form (what is accepted and refused, errors naming the field) and the aggregation in the
// notification queue with the real journal, outbox and renderer (a socket that records what is
// written): the leading edge goes out at once, what follows within the interval goes as one
// message in publish order with retractions, a bound sends early, a notification that is not
// aggregated never overtakes held ones, and a held notification survives a crash.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import { JOURNAL_SPACE, NotificationJournal } from '../../src/component/journal.ts';
import { NotificationQueue } from '../../src/component/notification-queue.ts';
import type { DigestLimits } from '../../src/component/digest.ts';
import { Outbox } from '../../src/component/outbox.ts';
import { silentLogger } from '../../src/log.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { applySubscriptionOptions, DEFAULT_SUBSCRIPTION_OPTIONS, digestMsOf } from '../../src/pubsub/subscription-options.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { NotificationRenderer } from '../../src/xmpp/notifications.ts';
import { parseSubscribeOptionsForm, subscribeOptionsForm } from '../../src/xmpp/subscribe-options-form.ts';
import { RecordingSocket, submittedOptions } from './notify-fixture.ts';

const EVENT = 'http://jabber.org/protocol/pubsub#event';

/** The PubsubError that `run` throws. */
function refusal(run: () => unknown): PubsubError {
  try {
    run();
  } catch (err) {
    if (err instanceof PubsubError) return err;
    throw err;
  }
  throw new Error('expected a refusal, got none');
}

describe('subscription options form: pubsub#digest and pubsub#digest_frequency', () => {
  it('offers both fields with their values (frequency 1000 ms when not set)', () => {
    const fields = (x: Element): Record<string, string | null> => Object.fromEntries(x.getChildren('field').map((f) => [String(f.attrs.var), f.getChildText('value')]));
    const off = fields(subscribeOptionsForm({ ...DEFAULT_SUBSCRIPTION_OPTIONS }));
    assert.equal(off['pubsub#digest'], '0');
    assert.equal(off['pubsub#digest_frequency'], '1000');
    const on = fields(subscribeOptionsForm({ ...DEFAULT_SUBSCRIPTION_OPTIONS, digest: true, digestFrequency: 40 }));
    assert.equal(on['pubsub#digest'], '1');
    assert.equal(on['pubsub#digest_frequency'], '40');
  });

  it('accepts digest on with a frequency in [10 ms, 1 min], and on alone (1000 ms)', () => {
    assert.deepEqual(parseSubscribeOptionsForm(submittedOptions({ 'pubsub#digest': '1', 'pubsub#digest_frequency': '25' })), { digest: true, digestFrequency: 25 });
    assert.deepEqual(parseSubscribeOptionsForm(submittedOptions({ 'pubsub#digest': 'true', 'pubsub#digest_frequency': '60000' })), { digest: true, digestFrequency: 60_000 });
    const alone = applySubscriptionOptions({ ...DEFAULT_SUBSCRIPTION_OPTIONS }, parseSubscribeOptionsForm(submittedOptions({ 'pubsub#digest': '1' })), Date.now());
    assert.equal(digestMsOf(alone), 1000);
    const off = applySubscriptionOptions(alone, parseSubscribeOptionsForm(submittedOptions({ 'pubsub#digest': '0' })), Date.now());
    assert.equal(digestMsOf(off), undefined, 'turned off again');
  });

  it('refuses other values with invalid-options naming the field', () => {
    for (const bad of ['5', '9', '60001', '86400000', 'abc', '1.5', '-20', '']) {
      const err = refusal(() => parseSubscribeOptionsForm(submittedOptions({ 'pubsub#digest': '1', 'pubsub#digest_frequency': bad })));
      assert.equal(err.condition, 'invalid-options', bad);
      assert.match(err.text ?? '', /pubsub#digest_frequency.*10 to 60000/, bad);
    }
    const err = refusal(() => parseSubscribeOptionsForm(submittedOptions({ 'pubsub#digest': 'maybe' })));
    assert.equal(err.condition, 'invalid-options');
    assert.match(err.text ?? '', /pubsub#digest must be a boolean/);
  });
});

class ItemsSocket extends RecordingSocket {
  /** For each message to `jid`, in order: its items as '+id' (publication) and '-id' (retraction), or its other event child's name. */
  messagesTo(jid: string): string[][] {
    return this.messageElements(jid).map((m) => {
      const event = m.getChild('event', EVENT) as Element;
      const items = event.getChild('items');
      if (!items) return [event.children.map((c) => (c as Element).name).join()];
      return items.children.map((c) => `${(c as Element).name === 'retract' ? '-' : '+'}${String((c as Element).attrs.id)}`);
    });
  }
}

const item = (id: string, payload = `<p xmlns="urn:x">${id}</p>`): ServiceEvent => ({ kind: 'items', node: 'n', item: { id, payload, publisher: 'a@x', published: 1 }, withPayload: true });
const retract = (...itemIds: string[]): ServiceEvent => ({ kind: 'retract', node: 'n', itemIds });
const digestOf = (ms: number): Recipient => ({ jid: 'd@x', subid: 'sd', digestMs: ms });
const PLAIN: Recipient = { jid: 'p@x', subid: 'sp' };
const ticks = async (n = 3): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};
/** Waits (polling) until `done` holds; fails after 10 s. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (const start = Date.now(); !done(); await new Promise((r) => setTimeout(r, 5))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

/** The real journal (in a memory store), outbox and renderer, writing to a recording socket. */
async function fanOut(limits?: DigestLimits, store = new MemoryStore()) {
  const space = store.state(JOURNAL_SPACE);
  const { journal } = await NotificationJournal.open(space, 'local', silentLogger);
  const outbox = new Outbox({ log: silentLogger, onConfirmed: (t) => journal.confirm(t), onRouted: (t) => journal.routed(t), onDropped: (t) => journal.dropped(t) });
  const socket = new ItemsSocket();
  outbox.attach(socket);
  const renderer = new NotificationRenderer('pubsub.x');
  const queue = new NotificationQueue(outbox, journal, (e, r) => renderer.render(e, r), limits);
  return { store, space, journal, socket, queue };
}

describe('notification digests: aggregation in the notification queue', () => {
  it('the first item goes out at once; those within the interval follow as ONE message, in publish order, retractions included', async () => {
    const { socket, queue } = await fanOut();
    const D = digestOf(1000);
    queue.notify(item('a'), [D, PLAIN]);
    await ticks();
    assert.deepEqual(socket.messagesTo('d@x'), [['+a']], 'leading edge: not delayed');
    queue.notify(item('b'), [PLAIN, D]);
    queue.notify(retract('a'), [D, PLAIN]);
    queue.notify(item('c'), [D, PLAIN]);
    await ticks();
    assert.deepEqual(socket.messagesTo('p@x'), [['+a'], ['+b'], ['-a'], ['+c']], 'a subscriber without digests gets each at once');
    assert.deepEqual(socket.messagesTo('d@x'), [['+a']], 'held until the interval ends');
    assert.equal(queue.heldForDigests, 3);
    await until(() => socket.messagesTo('d@x').length === 2, 'the digest');
    assert.deepEqual(socket.messagesTo('d@x'), [['+a'], ['+b', '-a', '+c']]);
    assert.equal(queue.heldForDigests, 0);
  });

  it('a digest that reaches its item or byte bound goes out at once; flushDigests (stop) sends what is held', async () => {
    const hour = 3_600_000;
    const byCount = await fanOut({ maxItems: 3 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) byCount.queue.notify(item(id), [digestOf(hour)]);
    await ticks();
    assert.deepEqual(byCount.socket.messagesTo('d@x'), [['+a'], ['+b', '+c', '+d']]);
    byCount.queue.flushDigests();
    await ticks();
    assert.deepEqual(byCount.socket.messagesTo('d@x'), [['+a'], ['+b', '+c', '+d'], ['+e']]);

    const bySize = await fanOut({ maxBytes: 500 });
    bySize.queue.notify(item('a'), [digestOf(hour)]);
    bySize.queue.notify(item('small'), [digestOf(hour)]);
    bySize.queue.notify(item('big', `<p xmlns="urn:x">${'x'.repeat(600)}</p>`), [digestOf(hour)]);
    bySize.queue.notify(item('after'), [digestOf(hour)]);
    await ticks();
    assert.deepEqual(bySize.socket.messagesTo('d@x'), [['+a'], ['+small'], ['+big']], 'sent before the item that would take it past the bound; that item alone');
    bySize.queue.flushDigests();
    await ticks();
    assert.deepEqual(bySize.socket.messagesTo('d@x').at(-1), ['+after']);
  });

  it('a subscriber that turns digests off (or changes its subscription) gets what its window holds before the next item', async () => {
    const { socket, queue } = await fanOut();
    queue.notify(item('a'), [digestOf(60_000)]);
    queue.notify(item('b'), [digestOf(60_000)]);
    queue.notify(item('c'), [digestOf(60_000), PLAIN]);
    await ticks();
    assert.deepEqual(socket.messagesTo('d@x'), [['+a']], 'b and c held');
    queue.notify(item('d'), [{ jid: 'd@x', subid: 'sd' }, PLAIN]); // digests off, another subscriber still plain
    await ticks();
    assert.deepEqual(socket.messagesTo('d@x'), [['+a'], ['+b', '+c'], ['+d']], 'the held ones first, then d');
    queue.notify(item('e'), [digestOf(60_000)]);
    queue.notify(item('f'), [digestOf(60_000)]);
    queue.notify(item('g'), [{ jid: 'd@x', subid: 'sd' }]); // digests off, nobody else aggregates
    await ticks();
    assert.deepEqual(socket.messagesTo('d@x').slice(3), [['+e'], ['+f'], ['+g']], 'held f before g');
    queue.notify(item('h'), [digestOf(60_000)]);
    queue.notify(item('i'), [digestOf(60_000)]);
    queue.notify(item('j'), [{ jid: 'd@x', subid: 'other', digestMs: 60_000 }]); // a new subscription of the same JID
    await ticks();
    assert.deepEqual(socket.messagesTo('d@x').slice(6), [['+h'], ['+i'], ['+j']], 'the old window sent before the new one opens');
  });

  it('a notification that is not aggregated (a purge) goes after what the digests of its node hold', async () => {
    const { socket, queue } = await fanOut();
    const D = digestOf(3_600_000);
    queue.notify(item('a'), [D]);
    queue.notify(item('b'), [D]);
    queue.notify({ kind: 'purge', node: 'n' }, [D]);
    await ticks();
    assert.deepEqual(socket.messagesTo('d@x'), [['+a'], ['+b'], ['purge']]);
  });

  it('a held notification survives a crash: the journal hands it back although later ones were confirmed; once its digest is confirmed, nothing is left', async () => {
    const store = new MemoryStore();
    const first = await fanOut(undefined, store);
    const D = digestOf(3_600_000);
    first.queue.notify(item('a'), [D, PLAIN]);
    first.queue.notify(item('b'), [D, PLAIN]);
    first.queue.notify(item('c'), [PLAIN]);
    await ticks();
    assert.deepEqual(first.socket.messagesTo('p@x'), [['+a'], ['+b'], ['+c']], 'written (and so confirmed: no barriers here)');
    await first.journal.durable(); // killed here
    const { undelivered } = await NotificationJournal.open(first.space, 'local', silentLogger);
    const toD = undelivered.filter((e) => e.pending.some((i) => e.recipients[i]?.jid === 'd@x')).map((e) => (e.event as { item: { id: string } }).item.id);
    assert.deepEqual(toD, ['b'], 'b is delivered to d@x after the restart');

    const second = await fanOut(undefined, new MemoryStore());
    second.queue.notify(item('a'), [D, PLAIN]);
    second.queue.notify(item('b'), [D, PLAIN]);
    second.queue.flushDigests();
    await ticks();
    assert.deepEqual(second.socket.messagesTo('d@x'), [['+a'], ['+b']]);
    await second.journal.durable();
    const { undelivered: left } = await NotificationJournal.open(second.space, 'local', silentLogger);
    assert.deepEqual(left, [], 'the digest and the events it replaced are confirmed and gone');
  });

  it("a window's payloads are written to the journal once, however many digest subscribers the node has", async () => {
    const store = new MemoryStore();
    const inner = store.state(JOURNAL_SPACE);
    const written: string[] = [];
    const recording = { state: () => ({ ...inner, range: inner.range.bind(inner), batch: async (ops: Parameters<typeof inner.batch>[0]) => {
      for (const op of ops) if (op.type === 'put') written.push(op.value);
      return inner.batch(ops);
    } }) } as unknown as MemoryStore;
    const { socket, queue, journal } = await fanOut(undefined, recording);
    const subscribers = Array.from({ length: 20 }, (_, i): Recipient => ({ jid: `d${i}@x`, subid: `s${i}`, digestMs: 3_600_000 }));
    const marker = (id: string): string => `payload of ${id} `.repeat(20);
    for (const id of ['a', 'b', 'c']) queue.notify(item(id, `<p xmlns="urn:x">${marker(id)}</p>`), subscribers);
    queue.flushDigests();
    await journal.durable();
    await ticks();
    assert.deepEqual(socket.messagesTo('d7@x'), [['+a'], ['+b', '+c']], 'every subscriber got the leading edge and one digest');
    const copies = (id: string): number => written.reduce((n, value) => n + value.split(marker(id)).length - 1, 0);
    assert.equal(copies('b'), 1, `b's payload written ${copies('b')} times (once with its event; the 20 digests refer to it)`);
    assert.equal(copies('c'), 1);
  });
});
