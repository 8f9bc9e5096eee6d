// The notification journal (in the store: Store.state 'journal') and the outbox's confirmation
// barriers, without a server: what a restart hands back for delivery after confirmations, drops,
// routed marks and a lost connection; what another member adopts from a dead one; the one-time import
// of an older Hermod's journal file; and which stanzas the outbox writes again after a disconnect.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Element } from 'ltx';
import { JOURNAL_FILE, JOURNAL_SPACE, NotificationJournal } from '../../src/component/journal.ts';
import { Outbox, ProducerStopped, type DurableTag, type OutboxSocket } from '../../src/component/outbox.ts';
import { silentLogger } from '../../src/log.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { LevelStore } from '../../src/store/level.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { Store } from '../../src/store/store.ts';

const event = (id: string): ServiceEvent => ({ kind: 'items', node: 'n', item: { id, payload: `<p xmlns="urn:x">${id}</p>`, publisher: 'a@x', published: 1 }, withPayload: true });
const recipients = (n: number): Recipient[] => Array.from({ length: n }, (_, i) => ({ jid: `s${i}@x`, subid: `sub${i}` }));
/** Item id and the recipients' JIDs still to be delivered, per undelivered event. */
const pendingOf = (events: Array<{ event: ServiceEvent; recipients: Recipient[]; pending: number[] }>): Array<[string, string[]]> =>
  events.map((e) => [(e.event as { item: { id: string } }).item.id, e.pending.map((i) => (e.recipients[i] as Recipient).jid)]);

async function withLevel(run: (store: Store, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hermod-journal-'));
  const store = new LevelStore(path.join(dir, 'store'));
  await store.open();
  try {
    await run(store, dir);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

describe('notification journal (in the store)', () => {
  it('hands back exactly the recipients not confirmed, written or dropped, across reopen, and deletes what is confirmed', () =>
    withLevel(async (store) => {
      const space = store.state(JOURNAL_SPACE);
      let { journal, undelivered } = await NotificationJournal.open(space, 'local', silentLogger);
      assert.deepEqual(undelivered, []);
      const a = journal.append(event('a'), recipients(3));
      const b = journal.append(event('b'), recipients(4));
      journal.append(event('c'), recipients(2));
      journal.confirm({ seq: a, index: 1 });
      journal.dropped([{ seq: b, index: 1 }, { seq: b, index: 2 }]);
      await journal.durable(); // a kill -9 here: nothing closed

      ({ journal, undelivered } = await NotificationJournal.open(space, 'local', silentLogger));
      assert.deepEqual(pendingOf(undelivered), [['a', ['s2@x']], ['b', ['s0@x', 's3@x']], ['c', ['s0@x', 's1@x']]]);
      const [, b2, c2] = undelivered.map((e) => e.seq) as [number, number, number];
      const d = journal.append(event('d'), recipients(1));
      assert.ok(d > (c2 as number), 'sequence continues');
      // Routed (a barrier came back) counts as delivered after a crash, unless the connection was lost meanwhile.
      journal.routed({ seq: b2, index: 1 });
      await journal.durable();
      ({ journal, undelivered } = await NotificationJournal.open(space, 'local', silentLogger));
      assert.deepEqual(pendingOf(undelivered), [['c', ['s0@x', 's1@x']], ['d', ['s0@x']]]);
      const [c3] = undelivered.map((e) => e.seq) as [number];
      journal.routed({ seq: c3, index: 1 });
      journal.rewound(); // the stream went away: what it routed may be lost with the server
      await journal.durable();
      ({ journal, undelivered } = await NotificationJournal.open(space, 'local', silentLogger));
      assert.deepEqual(pendingOf(undelivered), [['c', ['s0@x', 's1@x']], ['d', ['s0@x']]], 'rewound: sent again (nothing was confirmed)');

      journal.confirm({ seq: (undelivered.at(-1) as { seq: number }).seq, index: 0 });
      await journal.close();
      const left: string[] = [];
      for await (const [key] of space.range('')) left.push(key);
      assert.deepEqual(left, [], 'every confirmed event deleted, and the member key with the last one');
      ({ journal, undelivered } = await NotificationJournal.open(space, 'local', silentLogger));
      assert.deepEqual(undelivered, []);
      await journal.close();
    }));

  it('a digest refers to the events it replaces: they outlive their own confirmation until every digest is confirmed, and a crash in between hands the digest back whole', async () => {
    const store = new MemoryStore();
    const space = store.state(JOURNAL_SPACE);
    const keys = async (): Promise<number> => {
      let n = 0;
      for await (const [key] of space.range('e')) if (key) n++;
      return n;
    };
    const [d1, d2]: Recipient[] = [{ jid: 'd1@x', subid: 's1', digestMs: 1000 }, { jid: 'd2@x', subid: 's2', digestMs: 1000 }];
    const { journal } = await NotificationJournal.open(space, 'm', silentLogger);
    const a = journal.append(event('a'), [d1, d2] as Recipient[]);
    const b = journal.append(event('b'), [d1, d2] as Recipient[]);
    for (const seq of [a, b]) for (const i of [0, 1]) journal.hold(seq, i);
    const parts = ['a', 'b'].map((id) => ({ item: (event(id) as { item: { id: string; payload: string; publisher: string; published: number } }).item, withPayload: true }));
    const digest: ServiceEvent = { kind: 'digest', node: 'n', events: parts };
    const first = journal.appendDigest(digest as Extract<ServiceEvent, { kind: 'digest' }>, d1 as Recipient, [a, b]);
    journal.appendDigest(digest as Extract<ServiceEvent, { kind: 'digest' }>, d2 as Recipient, [a, b]);
    for (const seq of [a, b]) for (const i of [0, 1]) journal.release(seq, i);
    journal.confirm({ seq: first, index: 0 }); // a, b and d1's digest confirmed; d2's not yet
    await journal.durable();
    assert.equal(await keys(), 3, "a and b kept for d2's digest; d1's digest deleted");

    // A crash here: the next start hands back d2's digest with the items (payloads included).
    const { journal: again, undelivered } = await NotificationJournal.open(space, 'm', silentLogger);
    assert.equal(undelivered.length, 1);
    const [back] = undelivered;
    assert.deepEqual(back?.recipients, [d2]);
    assert.deepEqual(back?.event, digest, 'the digest as it was sent, rebuilt from the events it refers to');
    assert.equal(await keys(), 1, 'the digest re-recorded with its parts; a and b gone');
    again.confirm({ seq: back?.seq as number, index: 0 });
    await again.durable();
    assert.equal(await keys(), 0, 'nothing left once it is confirmed');
  });

  it("another member adopts a dead member's undelivered events once (they become its own)", async () => {
    const store = new MemoryStore();
    const space = store.state(JOURNAL_SPACE);
    const { journal: dead } = await NotificationJournal.open(space, 'm1', silentLogger);
    const x = dead.append(event('x'), recipients(3));
    dead.append(event('y'), recipients(2));
    dead.routed({ seq: x, index: 0 });
    await dead.durable(); // then killed
    const { journal: survivor } = await NotificationJournal.open(space, 'm2', silentLogger);
    assert.deepEqual((await NotificationJournal.members(space)).sort(), ['m1', 'm2']);
    const adopted = await survivor.adopt('m1');
    assert.deepEqual(pendingOf(adopted), [['x', ['s1@x', 's2@x']], ['y', ['s0@x', 's1@x']]]);
    assert.deepEqual(await NotificationJournal.members(space), ['m2'], "the dead member's journal is gone");
    assert.deepEqual(await survivor.adopt('m1'), [], 'adopted once');
    // The survivor dies too: a third member gets them from the survivor's journal.
    const { journal: third } = await NotificationJournal.open(space, 'm3', silentLogger);
    assert.deepEqual(pendingOf(await third.adopt('m2')), [['x', ['s1@x', 's2@x']], ['y', ['s0@x', 's1@x']]]);
  });

  it("imports an older Hermod's outbox.journal file once (lines cut short by a power loss skipped; a written mark is not taken as delivered) and renames it *.imported", () =>
    withLevel(async (store, dir) => {
      const file = path.join(dir, JOURNAL_FILE);
      const r = JSON.stringify(recipients(2));
      await writeFile(file, [`{"q":0,"e":${JSON.stringify(event('old'))},"r":${r}}`, '{"a":0,"i":0}', `{"q":1,"e":${JSON.stringify(event('new'))},"r":${r}}`, '{"w":1,"i":0}', '{"q":2,"e":{"kind":"ite'].join('\n'));
      const { journal, undelivered } = await NotificationJournal.open(store.state(JOURNAL_SPACE), 'local', silentLogger, { legacyDir: dir });
      assert.deepEqual(pendingOf(undelivered), [['old', ['s1@x']], ['new', ['s0@x', 's1@x']]]);
      assert.equal(existsSync(file), false);
      assert.equal(existsSync(`${file}.imported`), true);
      await journal.close();
      const again = await NotificationJournal.open(store.state(JOURNAL_SPACE), 'local', silentLogger, { legacyDir: dir });
      assert.deepEqual(pendingOf(again.undelivered), [['old', ['s1@x']], ['new', ['s0@x', 's1@x']]], 'now from the store, not imported twice');
      await again.journal.close();
    }));
});

class FakeSocket implements OutboxSocket {
  chunks: string[] = [];
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }
  once(_event: 'drain' | 'close', _listener: () => void): unknown {
    return this;
  }
  removeListener(_event: 'drain' | 'close', _listener: () => void): unknown {
    return this;
  }
  /** Barrier ids in what was written. */
  barriers(): string[] {
    return this.chunks.join('').match(/hermod-barrier-[0-9a-z.-]+/g) ?? [];
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const barrierBack = (id: string): Element => new Element('iq', { type: 'result', id, from: 'pubsub.x', to: 'pubsub.x' });

describe('outbox confirmation', () => {
  it('confirms only what a returned barrier covers; after a disconnect writes the unconfirmed durable stanzas again, not the others', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 10, settleMs: 0, onConfirmed: (t) => confirmed.push(t) });
    const socket = new FakeSocket();
    outbox.attach(socket);
    outbox.push(['<m1/>', '<m2/>'], { seq: 0, firstIndex: 0 });
    outbox.push(['<mam/>']);
    outbox.push(['<m3/>'], { seq: 1, firstIndex: 0 });
    await tick();
    assert.equal(outbox.pending, 4);
    const ids = socket.barriers();
    assert.equal(ids.length, 1, 'one barrier in flight, ending the first chunk');
    assert.equal(outbox.acknowledge(barrierBack(ids[0] as string)), true);
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }]);
    assert.equal(outbox.pending, 2);
    await tick();
    assert.equal(socket.barriers().length, 2, 'the next barrier covers what was written meanwhile');
    assert.equal(outbox.acknowledge(new Element('iq', { type: 'result', id: 'other', from: 'pubsub.x' })), false, 'other stanzas pass');

    outbox.detach();
    const again = new FakeSocket();
    outbox.attach(again);
    await tick();
    assert.equal(again.chunks.join('').replace(/<iq.*?<\/iq>/g, ''), '<m3/>', 'the unconfirmed durable stanza only');
    const [id] = again.barriers();
    outbox.acknowledge(barrierBack(id as string));
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }, { seq: 1, index: 0 }]);
    assert.equal(outbox.pending, 0);
    assert.equal(outbox.sent, 3);
    await outbox.drained();
  });

  it('lets go of the text of confirmed stanzas at once (large digests kept thousands alive), and keeps what may have to be written again', async () => {
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 1_000_000, settleMs: 0 });
    const socket = new FakeSocket();
    outbox.attach(socket);
    const digest = (i: number): string => `<message id="d${i}">${'x'.repeat(10_000)}</message>`;
    outbox.push([digest(0), digest(1), digest(2)], { seq: 0, firstIndex: 0 });
    await tick();
    const [first] = socket.barriers();
    outbox.push([digest(3)], { seq: 1, firstIndex: 0 });
    await tick();
    assert.equal(outbox.heldChars, 4 * digest(0).length, 'written, not yet confirmed: held (written again after a disconnect)');
    outbox.acknowledge(barrierBack(first as string));
    assert.equal(outbox.pending, 1);
    assert.equal(outbox.heldChars, digest(3).length, 'the three confirmed ones let go; the one the next barrier covers kept');
  });

  it('one barrier in flight confirms any number of chunks: each durable stanza only once a barrier written after it is back', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 10, settleMs: 0, onConfirmed: (t) => confirmed.push(t) });
    const socket = new FakeSocket();
    outbox.attach(socket);
    const stanzas = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `<n${from + i}/>`);
    outbox.push(stanzas(0, 20), { seq: 0, firstIndex: 0 }); // 10 chunks of two
    await tick();
    assert.equal(socket.chunks.length, 10);
    const [first] = socket.barriers();
    assert.equal(socket.barriers().length, 1);
    assert.match(socket.chunks[0] ?? '', /^<n0\/><n1\/><iq /, 'the barrier ends the first chunk');
    outbox.push(stanzas(20, 30), { seq: 1, firstIndex: 0 }); // written while the barrier is out
    await tick();
    assert.equal(socket.barriers().length, 1, 'no second barrier while one is in flight');
    outbox.acknowledge(barrierBack(first as string));
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }], 'only what was written before the barrier');
    assert.equal(outbox.pending, 28);
    let drained = false;
    const done = outbox.drained().then(() => (drained = true));
    await tick();
    const ids = socket.barriers();
    assert.equal(ids.length, 2);
    assert.match(socket.chunks.at(-1) ?? '', /^<iq /, 'written alone: nothing else was queued');
    assert.equal(drained, false);
    outbox.acknowledge(barrierBack(ids[1] as string));
    await done;
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }, { seq: 1, index: 9 }]);
    assert.equal(outbox.barriersSent, 2);
    await tick();
    assert.equal(socket.barriers().length, 2, 'nothing written since: no further barrier');
  });

  it('what the server routed just before the stream went away is written again; what stayed routed for settleMs is confirmed', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 100, settleMs: 60, onConfirmed: (t) => confirmed.push(t) });
    const socket = new FakeSocket();
    outbox.attach(socket);
    outbox.push(['<a/>', '<b/>'], { seq: 0, firstIndex: 0 });
    await tick();
    const drained = outbox.drained();
    outbox.acknowledge(barrierBack(socket.barriers()[0] as string));
    await drained; // routed: MAM pages and the stop's flush wait no longer
    assert.deepEqual(confirmed, [], 'routed, not yet settled');
    assert.equal(outbox.pending, 2);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }], 'settled while the stream stayed up');

    outbox.push(['<c/>'], { seq: 1, firstIndex: 0 });
    await tick();
    outbox.acknowledge(barrierBack(socket.barriers()[1] as string));
    outbox.detach(); // the server went away right after routing <c/> (e.g. a shutdown closing sessions)
    const again = new FakeSocket();
    outbox.attach(again);
    await tick();
    assert.equal(again.chunks.join('').replace(/<iq.*?<\/iq>/g, ''), '<c/>', 'written again: it may have been dropped');
    outbox.acknowledge(barrierBack(again.barriers()[0] as string));
    outbox.settle(); // a deliberate stop: the server stays up
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }, { seq: 1, index: 0 }]);
    assert.equal(outbox.pending, 0);
    outbox.detach();
  });

  it('a barrier that never comes back does not stop confirmations: an overdue one is followed by another', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 10, barrierTimeoutMs: 50, settleMs: 0, onConfirmed: (t) => confirmed.push(t) });
    const socket = new FakeSocket();
    outbox.attach(socket);
    outbox.push(['<a/>', '<b/>'], { seq: 0, firstIndex: 0 });
    await tick();
    const [lost] = socket.barriers();
    assert.ok(lost);
    // The server lost it (or routed it elsewhere): after 50 ms another is written (waited for up
    // to 5 s: a busy machine may run the timer late).
    for (let waited = 0; socket.barriers().length < 2 && waited < 5_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    const ids = socket.barriers();
    assert.ok(ids.length >= 2, 'another barrier once the first is overdue, though nothing new was written');
    const drained = outbox.drained();
    outbox.acknowledge(barrierBack(ids.at(-1) as string));
    await drained;
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }]);
    assert.equal(outbox.acknowledge(barrierBack(lost)), true, 'the lost one, arriving late, is taken and changes nothing');
    assert.deepEqual(confirmed, [{ seq: 0, index: 1 }]);
    outbox.detach();
  });

  it('tells the journal what a returned barrier covers as routed before it settles, and nothing at a mere write', async () => {
    const routed: DurableTag[] = [];
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 8, settleMs: 60_000, onRouted: (t) => routed.push(t), onConfirmed: (t) => confirmed.push(t) });
    const socket = new FakeSocket();
    outbox.attach(socket);
    outbox.push(['<a/>', '<b/>', '<c/>'], { seq: 0, firstIndex: 0 });
    await tick();
    assert.equal(socket.chunks.join('').replace(/<iq.*?<\/iq>/g, ''), '<a/><b/><c/>', 'written at once, no store write waited for');
    assert.deepEqual(routed, [], 'written is not routed');
    outbox.acknowledge(barrierBack(socket.barriers()[0] as string));
    assert.deepEqual(routed, [{ seq: 0, index: 1 }], 'the barrier ended the first chunk');
    assert.deepEqual(confirmed, [], 'not settled yet');
    await tick();
    outbox.acknowledge(barrierBack(socket.barriers()[1] as string));
    assert.deepEqual(routed, [{ seq: 0, index: 1 }, { seq: 0, index: 2 }]);
    outbox.detach();
  });
});

/**
 * A journal in `store` feeding an outbox (real barriers, settling longer than the test) on a
 * recording socket, one queued stanza per item id; `crash()` opens the journal as the restart
 * after a kill -9 would (nothing closed).
 */
async function crashPath(store: Store, ids: string[]) {
  const { journal } = await NotificationJournal.open(store.state(JOURNAL_SPACE), 'local', silentLogger);
  const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 1, settleMs: 60_000, onRouted: (t) => journal.routed(t), onConfirmed: (t) => journal.confirm(t) });
  const socket = new FakeSocket();
  outbox.attach(socket);
  const seqs = ids.map((id) => journal.append(event(id), recipients(1)));
  await journal.durable();
  seqs.forEach((seq, i) => outbox.push([`<${ids[i]}/>`], { seq, firstIndex: 0 }));
  const crash = async (): Promise<Array<[string, string[]]>> => {
    await tick();
    await journal.durable();
    const crashed = await NotificationJournal.open(store.state(JOURNAL_SPACE), 'local', silentLogger);
    await crashed.journal.close();
    return pendingOf(crashed.undelivered);
  };
  return { socket, outbox, crash };
}

describe('a kill -9 of Hermod: what is delivered again', () => {
  it('a chunk written to the socket whose barrier has not come back is delivered again (a reset connection loses what the kernel had not sent)', () =>
    withLevel(async (store) => {
      const { socket, outbox, crash } = await crashPath(store, ['a', 'b']);
      await eventuallyTrue(() => socket.chunks.join('').includes('<b/>'));
      outbox.acknowledge(barrierBack(socket.barriers()[0] as string)); // the server routed <a/> (the barrier ended its chunk)
      // A kill -9 now: <b/> was written, never routed: the next Hermod delivers it; <a/> it does not.
      assert.deepEqual(await crash(), [['b', ['s0@x']]]);
    }));

  it('what the server routed is not delivered a second time, though it had not settled', () =>
    withLevel(async (store) => {
      const { socket, outbox, crash } = await crashPath(store, ['a', 'b']);
      await eventuallyTrue(() => socket.chunks.join('').includes('<b/>'));
      outbox.acknowledge(barrierBack(socket.barriers()[0] as string));
      await tick();
      outbox.acknowledge(barrierBack(socket.barriers()[1] as string));
      assert.deepEqual(await crash(), [], 'routed: the server delivers it without us');
    }));
});

/** A socket whose kernel buffer is full: every write pushes back until the test lets it drain. */
class SlowSocket implements OutboxSocket {
  written = 0;
  readonly chunks: string[] = [];
  private listeners: Array<{ event: 'drain' | 'close'; listener: () => void }> = [];
  write(chunk: string): boolean {
    this.written += chunk.length;
    this.chunks.push(chunk);
    return false;
  }
  once(event: 'drain' | 'close', listener: () => void): unknown {
    this.listeners.push({ event, listener });
    return this;
  }
  removeListener(event: 'drain' | 'close', listener: () => void): unknown {
    this.listeners = this.listeners.filter((l) => l.event !== event || l.listener !== listener);
    return this;
  }
  /** The kernel took the last write: 'drain'. */
  drain(): void {
    for (const { listener } of this.listeners.filter((l) => l.event === 'drain')) listener();
  }
}

describe('outbox back-pressure', () => {
  it('a producer waiting with whenBelow goes on once the unwritten characters fell to its bound; while disconnected it is held until the next connection; after its longest wait while connected', async () => {
    const outbox = new Outbox({ log: silentLogger, chunkBytes: 100 });
    const socket = new SlowSocket();
    outbox.attach(socket);
    outbox.push(Array.from({ length: 10 }, (_, i) => `<m${i}/>`.padEnd(100, ' ')));
    await tick();
    assert.equal(socket.written, 100, 'one chunk written, then the socket pushed back');
    assert.equal(outbox.unwritten, 900);
    let resumed = false;
    const waiting = outbox.whenBelow(300, 60_000).then(() => (resumed = true));
    for (let drains = 0; drains < 6; drains++) {
      await tick();
      assert.equal(resumed, false, `still waiting with ${outbox.unwritten} characters unwritten`);
      socket.drain();
      await tick();
    }
    await waiting;
    assert.equal(outbox.unwritten, 300, 'resumed as the bound was reached, not before');
    assert.equal(socket.written, 700);

    // The socket goes: what waits is for the next connection, and so are the producers, however
    // long (their longest wait counts only while connected).
    let heldDone = false;
    const held = outbox.whenBelow(0, 20).then(() => (heldDone = true));
    outbox.detach();
    let laterDone = false;
    const later = outbox.whenBelow(0, 20).then(() => (laterDone = true));
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual([heldDone, laterDone], [false, false], 'held while disconnected, past maxWaitMs');
    // A stalled server: once connected, the wait ends after maxWaitMs anyway.
    const alive = setTimeout(() => {}, 5_000); // the wait's own timer is unref'd; a real socket keeps the process up
    outbox.attach(new SlowSocket());
    await Promise.all([held, later]);
    assert.ok(outbox.unwritten > 0);
    await outbox.whenBelow(0, 20);
    clearTimeout(alive);
    // A stop while disconnected: whoever waits, and whoever would wait later, is refused (it is
    // to publish nothing more); once connected again, producers go on at once.
    outbox.detach();
    const stopping = outbox.whenBelow(0, 60_000);
    outbox.stopProducers();
    await assert.rejects(stopping, ProducerStopped);
    await assert.rejects(outbox.whenBelow(0, 60_000), ProducerStopped);
    outbox.attach(new SlowSocket());
    await outbox.whenBelow(0, 60_000);
  });

  it('a producer publishing while the server is down is held at its bound: nothing is dropped past the limit, all of it is written in order on connection', async () => {
    const dropped: number[] = [];
    const outbox = new Outbox({ log: silentLogger, limit: 10, onDropped: (tags) => dropped.push(...tags.map((t) => t.seq)) });
    let published = 0;
    const producer = (async () => {
      for (let seq = 0; seq < 20; seq++) {
        outbox.push([`<message id='n${seq}'/>`], { seq, firstIndex: 0 });
        published++;
        await outbox.whenBelow(0, 1_000);
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(published, 1, 'held after its first publish: the server is down');
    assert.equal(outbox.dropped, 0);
    const socket = new SlowSocket();
    outbox.attach(socket);
    for (let i = 0; i < 400 && published < 20; i++) {
      socket.drain();
      await tick();
    }
    socket.drain();
    assert.equal(published, 20, 'all published once the server took them');
    await producer;
    assert.equal(outbox.dropped, 0);
    assert.deepEqual(dropped, []);
    assert.equal(socket.chunks.join(''), Array.from({ length: 20 }, (_, seq) => `<message id='n${seq}'/>`).join(''));
  });
});

async function eventuallyTrue(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(check(), 'condition reached');
}
