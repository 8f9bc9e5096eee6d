// Packed payloads (`{urn:hermod:pubsub:0}packed`, src/xmpp/packed.ts): the subscription option
// (form field, validation, a JID's several subscriptions), the notifications the real renderer,
// journal and outbox write for a subscriber that asked for it — single items, digests, items
// without payload, retractions — and the partner's unpacking, which must give back exactly the
// payload a plain subscriber gets and leave an item whose packed payload cannot be read without
// payload (to be fetched), never with a wrong one.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Element, parse } from 'ltx';
import type { DigestLimits } from '../../src/component/digest.ts';
import { JOURNAL_SPACE, NotificationJournal } from '../../src/component/journal.ts';
import { NotificationQueue } from '../../src/component/notification-queue.ts';
import { Outbox } from '../../src/component/outbox.ts';
import { silentLogger } from '../../src/log.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { applySubscriptionOptions, DEFAULT_SUBSCRIPTION_OPTIONS, sameOptions } from '../../src/pubsub/subscription-options.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { NotificationRenderer } from '../../src/xmpp/notifications.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { PACK_MAX_CHARS, unpackPayloads } from '../../src/xmpp/packed.ts';
import { PACKED_FIELD, parseSubscribeOptionsForm, subscribeOptionsForm } from '../../src/xmpp/subscribe-options-form.ts';
import { RecordingSocket, submittedOptions } from './notify-fixture.ts';

/** A payload with everything that escapes differently: quotes, both entities, markup characters, non-ASCII, an attribute. */
const PAYLOAD = `<entry xmlns="http://www.w3.org/2005/Atom" xml:lang="fi"><title>"Hyvää" &amp; 'päivää' &lt;3 💌</title><json xmlns="urn:xmpp:json:0">{"_id":"a&amp;b","n":"&lt;tag&gt;"}</json><category term="x&quot;y"/></entry>`;

const item = (id: string, payload = PAYLOAD): ServiceEvent => ({ kind: 'items', node: 'n', item: { id, payload, publisher: 'a@x', published: 1 }, withPayload: true });
const PACKED: Recipient = { jid: 'k@x', subid: 'sk', packed: true };
const PLAIN: Recipient = { jid: 'p@x', subid: 'sp' };

/** The real journal (memory store), outbox and renderer writing to a recording socket. */
async function fanOut(limits?: DigestLimits) {
  const { journal } = await NotificationJournal.open(new MemoryStore().state(JOURNAL_SPACE), 'local', silentLogger);
  const outbox = new Outbox({ log: silentLogger, onConfirmed: (t) => journal.confirm(t), onRouted: (t) => journal.routed(t), onDropped: (t) => journal.dropped(t) });
  const socket = new RecordingSocket();
  outbox.attach(socket);
  const renderer = new NotificationRenderer('pubsub.x');
  return { socket, queue: new NotificationQueue(outbox, journal, (e, r) => renderer.render(e, r), limits) };
}

async function until(done: () => boolean, what: string): Promise<void> {
  for (const start = Date.now(); !done(); await new Promise((r) => setTimeout(r, 5))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

const itemsOf = (m: Element): Element[] => m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items')?.children.filter((c): c is Element => typeof c !== 'string') ?? [];
/** How each child of the message's <items/> travels: '+id packed' (text only), '+id xml', '+id none', '-id'. */
const shapes = (m: Element): string[] =>
  itemsOf(m).map((c) => (c.name === 'retract' ? `-${String(c.attrs.id)}` : `+${String(c.attrs.id)} ${c.getChildElements().length > 0 ? 'xml' : c.getText().trim() !== '' ? 'packed' : 'none'}`));

describe('packed payloads: what a subscriber that asked for them gets', () => {
  it('one item: packed for that subscriber, XML for the other; unpacked, the payload is the very element the other got', async () => {
    const { socket, queue } = await fanOut();
    queue.notify(item('a'), [PACKED, PLAIN]);
    await until(() => socket.messageElements('p@x').length === 1 && socket.messageElements('k@x').length === 1, 'both notifications');
    const [packed] = socket.messageElements('k@x') as [Element];
    const [plain] = socket.messageElements('p@x') as [Element];
    assert.deepEqual(shapes(packed), ['+a packed']);
    assert.deepEqual(shapes(plain), ['+a xml']);
    assert.equal(itemsOf(packed)[0]?.getChildElements().length, 0, 'to a receiver that does not unpack, an item without payload (XEP-0060 §7.1.2.2): it fetches the item');
    const raw = socket.written.slice(socket.written.indexOf('to="k@x"'));
    assert.ok(!raw.slice(0, raw.indexOf('</message>')).includes('&quot;') && !raw.slice(0, raw.indexOf('</message>')).includes('"_id"'), 'no payload markup and no quote in the packed message');
    assert.deepEqual(unpackPayloads(packed), { unpacked: 1, failed: [] });
    assert.equal(itemsOf(packed)[0]?.toString(), itemsOf(plain)[0]?.toString(), 'the same item, payload and attributes');
    assert.equal(itemsOf(packed)[0]?.getChildElements()[0]?.getChildText('title'), `"Hyvää" & 'päivää' <3 💌`);
    assert.equal(packed.getChild('stanza-id', 'urn:xmpp:sid:0'), undefined);
  });

  it('a digest packs its items and leaves its retractions; an item without payload and a retraction are not packed', async () => {
    const { socket, queue } = await fanOut();
    const digest: Recipient = { ...PACKED, digestMs: 60_000 };
    queue.notify(item('a'), [digest]); // the leading edge, at once
    queue.notify(item('b'), [digest]);
    queue.notify({ kind: 'retract', node: 'n', itemIds: ['a'] }, [digest]);
    queue.notify(item('c', '<p xmlns="urn:x">c</p>'), [digest]);
    queue.flushDigests();
    queue.notify({ kind: 'items', node: 'n', item: { id: 'd', payload: '', publisher: 'a@x', published: 1 }, withPayload: false }, [PACKED]);
    queue.notify({ kind: 'retract', node: 'n', itemIds: ['d'] }, [PACKED]);
    await until(() => socket.messageElements('k@x').length === 4, 'four messages');
    assert.deepEqual(socket.messageElements('k@x').map(shapes), [['+a packed'], ['+b packed', '-a', '+c packed'], ['+d none'], ['-d']]);
    const [, held] = socket.messageElements('k@x') as [Element, Element];
    unpackPayloads(held);
    assert.deepEqual(shapes(held), ['+b xml', '-a', '+c xml']);
    assert.equal(itemsOf(held)[2]?.getChildElements()[0]?.toString(), '<p xmlns="urn:x">c</p>');
  });

  it('a payload above PACK_MAX_CHARS goes plain (with packed ones in the same digest)', async () => {
    const { socket, queue } = await fanOut();
    const big = `<p xmlns="urn:x">${'x'.repeat(PACK_MAX_CHARS)}</p>`;
    const digest: Recipient = { ...PACKED, digestMs: 60_000 };
    queue.notify(item('big', big), [PACKED]);
    queue.notify(item('a'), [digest]);
    queue.notify(item('b', big), [digest]);
    queue.notify(item('c'), [digest]);
    queue.flushDigests();
    await until(() => socket.messageElements('k@x').length === 3, 'three messages');
    assert.deepEqual(socket.messageElements('k@x').map(shapes), [['+big xml'], ['+a packed'], ['+b xml', '+c packed']]);
    const [, , mixed] = socket.messageElements('k@x') as [Element, Element, Element];
    assert.deepEqual(unpackPayloads(mixed), { unpacked: 1, failed: [] });
    assert.equal(itemsOf(mixed)[0]?.getChildElements()[0]?.toString(), big);
  });

  it('after a crash, the journal hands back a held notification with its recipient still packed: sent again, it goes packed', async () => {
    const store = new MemoryStore();
    const space = store.state(JOURNAL_SPACE);
    const { journal } = await NotificationJournal.open(space, 'local', silentLogger);
    const outbox = new Outbox({ log: silentLogger, onConfirmed: (t) => journal.confirm(t), onRouted: (t) => journal.routed(t), onDropped: (t) => journal.dropped(t) });
    const renderer = new NotificationRenderer('pubsub.x');
    const queue = new NotificationQueue(outbox, journal, (e, r) => renderer.render(e, r)); // no socket: nothing is confirmed
    queue.notify(item('a'), [{ ...PACKED, digestMs: 3_600_000 }]);
    queue.notify(item('b'), [{ ...PACKED, digestMs: 3_600_000 }]); // held in the digest window
    await journal.durable(); // killed here
    const { undelivered } = await NotificationJournal.open(space, 'local', silentLogger);
    const again = undelivered.flatMap((e) => renderer.render(e.event, e.pending.map((i) => e.recipients[i] as Recipient)));
    assert.equal(again.length, 2);
    assert.deepEqual(again.map((m) => shapes(parse(m) as Element)), [['+a packed'], ['+b packed']]);
  });

  it("a digest's size bound counts a packed payload as it travels (base64: 4/3 of its UTF-8 bytes)", async () => {
    const { socket, queue } = await fanOut({ maxBytes: 1000 });
    const payload = `<p xmlns="urn:x">${'ä'.repeat(150)}</p>`; // 171 characters, 321 bytes: 428 as base64
    for (const r of [PACKED, PLAIN]) for (const id of ['lead', 'a', 'b', 'c']) queue.notify(item(id, payload), [{ ...r, digestMs: 3_600_000 }]);
    queue.flushDigests();
    await until(() => ['k@x', 'p@x'].every((jid) => socket.messageElements(jid).flatMap(itemsOf).length === 4), 'every item to both');
    assert.deepEqual(socket.messageElements('k@x').map(shapes), [['+lead packed'], ['+a packed', '+b packed'], ['+c packed']], 'two packed payloads (2 × (428 + 64)) fill a 1000-character digest');
    assert.deepEqual(socket.messageElements('p@x').map(shapes), [['+lead xml'], ['+a xml', '+b xml', '+c xml']], 'three plain ones (3 × (171 + 64)) do not');
  });

  it('a JID with two subscriptions to a node gets packed payloads only if both asked for them', async () => {
    const to: Recipient[][] = [];
    const service = new PubsubService({ store: new MemoryStore(), mayCreateNodes: () => true, notifier: (_event, recipients) => to.push(recipients) });
    await service.create('site@a.test', 'n', { accessModel: 'open' });
    await service.subscribe('p@b.test', 'n', 'p@b.test', { packed: true });
    await service.subscribe('q@b.test', 'n', 'q@b.test', { packed: true });
    await service.subscribe('q@b.test', 'n', 'q@b.test', { deliver: true });
    to.length = 0;
    await service.publish('site@a.test', 'n', { item: { id: 'd', payload: '<p xmlns="x"/>' } });
    assert.deepEqual(
      to.flat().map((r) => [r.jid, r.packed === true]),
      [
        ['p@b.test', true],
        ['q@b.test', false],
      ],
    );
  });
});

describe('subscription options form: packed', () => {
  it('is offered in Clark notation (XEP-0068 §3.4) with its value, parsed both ways; off is not stored; subscriptions are told apart by it', () => {
    const value = (o: object): string | undefined => subscribeOptionsForm({ ...DEFAULT_SUBSCRIPTION_OPTIONS, ...o }).getChildren('field').find((f) => f.attrs.var === PACKED_FIELD)?.getChildText('value') ?? undefined;
    assert.equal(PACKED_FIELD, '{urn:hermod:pubsub:0}packed');
    assert.deepEqual([value({}), value({ packed: true })], ['0', '1']);
    assert.deepEqual(parseSubscribeOptionsForm(submittedOptions({ [PACKED_FIELD]: 'true' })), { packed: true });
    const on = applySubscriptionOptions({ ...DEFAULT_SUBSCRIPTION_OPTIONS }, { packed: true }, 0);
    const off = applySubscriptionOptions(on, parseSubscribeOptionsForm(submittedOptions({ [PACKED_FIELD]: '0' })), 0);
    assert.equal(off.packed, undefined);
    assert.equal(sameOptions(on, off), false);
  });
  it('refuses another value with invalid-options naming the field', () => {
    assert.throws(
      () => parseSubscribeOptionsForm(submittedOptions({ [PACKED_FIELD]: 'zip' })),
      (err: unknown) => err instanceof PubsubError && err.condition === 'invalid-options' && /packed/.test(err.message),
    );
  });
});

describe('unpackPayloads (the partner side)', () => {
  const message = (...packedTexts: string[]): Element =>
    parse(
      `<message from="pubsub.a.test" to="pubsub.b.test"><event xmlns="${NS.PUBSUB_EVENT}"><items node="n">${packedTexts
        .map((t, i) => `<item id="i${i}">${t}</item>`)
        .join('')}<retract id="r"/></items></event></message>`,
    ) as Element;
  const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

  it('gives back each payload element; line breaks in the base64 are allowed; other stanzas and plain items are left alone', () => {
    const m = message(b64('<a xmlns="urn:x" k="v">1</a>'), b64('<b xmlns="urn:x"/>').replace(/(.{4})/g, '$1\n'));
    assert.deepEqual(unpackPayloads(m), { unpacked: 2, failed: [] });
    assert.deepEqual(itemsOf(m).map((c) => c.toString()), ['<item id="i0"><a xmlns="urn:x" k="v">1</a></item>', '<item id="i1"><b xmlns="urn:x"/></item>', '<retract id="r"/>']);
    assert.equal(itemsOf(m)[0]?.getChildElements()[0]?.parent, itemsOf(m)[0], 'the payload is a child of its item');
    const plain = parse(`<message><event xmlns="${NS.PUBSUB_EVENT}"><items node="n"><item id="x"><a xmlns="urn:x"/></item><item id="e"/><item id="w"> </item></items></event></message>`) as Element;
    const before = plain.toString();
    assert.deepEqual(unpackPayloads(plain), { unpacked: 0, failed: [] });
    assert.equal(plain.toString(), before);
    assert.deepEqual(unpackPayloads(parse('<iq type="result"/>') as Element), { unpacked: 0, failed: [] });
  });

  it('a payload that is not base64 of one well-formed UTF-8 element leaves its item without payload, reported; the others are unpacked', () => {
    const deep = `${'<d>'.repeat(1100)}${'</d>'.repeat(1100)}`;
    const bad = ['not*base64', 'abc', b64('<a>unclosed'), b64('<a/><b/>'), b64('text<a/>'), b64(Buffer.from([0x3c, 0x61, 0x3e, 0xff, 0x3c, 0x2f, 0x61, 0x3e])), b64(deep)];
    const m = message(b64('<ok xmlns="urn:x"/>'), ...bad);
    const result = unpackPayloads(m);
    assert.equal(result.unpacked, 1);
    assert.deepEqual(
      result.failed.map((f) => f.id),
      bad.map((_, i) => `i${i + 1}`),
    );
    for (const f of result.failed) assert.ok(f.reason.length > 0);
    assert.deepEqual(shapes(m), ['+i0 xml', ...bad.map((_, i) => `+i${i + 1} none`), '-r']);
  });
});
