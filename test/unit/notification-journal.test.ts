// The notification journal and the outbox's confirmation barriers, without a server: what a
// restart hands back for delivery after confirmations, drops, writes and a lost connection; and
// which stanzas the outbox writes again after a disconnect.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Element } from 'ltx';
import { JOURNAL_FILE, NotificationJournal } from '../../src/component/journal.ts';
import { Outbox, type DurableTag, type OutboxSocket } from '../../src/component/outbox.ts';
import { silentLogger } from '../../src/log.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';

const event = (id: string): ServiceEvent => ({ kind: 'items', node: 'n', item: { id, payload: `<p xmlns="urn:x">${id}</p>`, publisher: 'a@x', published: 1 }, withPayload: true });
const recipients = (n: number): Recipient[] => Array.from({ length: n }, (_, i) => ({ jid: `s${i}@x`, subid: `sub${i}` }));

describe('notification journal', () => {
  it('hands back exactly the recipients not confirmed, written or dropped, across reopen, and starts over once all are confirmed', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'hermod-journal-'));
    try {
      let { journal, undelivered } = NotificationJournal.open(dir, silentLogger, 0);
      assert.deepEqual(undelivered, []);
      const a = journal.append(event('a'), recipients(3));
      const b = journal.append(event('b'), recipients(4));
      const c = journal.append(event('c'), recipients(2));
      journal.confirm({ seq: a, index: 1 });
      journal.dropped([{ seq: b, index: 1 }, { seq: b, index: 2 }]);
      journal.close();

      ({ journal, undelivered } = NotificationJournal.open(dir, silentLogger, 0));
      assert.deepEqual(undelivered.map((e) => [e.seq, (e.event as { item: { id: string } }).item.id, e.pending]), [[a, 'a', [2]], [b, 'b', [0, 3]], [c, 'c', [0, 1]]]);
      assert.equal(journal.append(event('d'), recipients(1)), c + 1, 'sequence continues');
      // Written counts as delivered after a crash, unless the connection was lost meanwhile.
      journal.written({ seq: b, index: 3 });
      journal.close();
      ({ journal, undelivered } = NotificationJournal.open(dir, silentLogger, 0));
      assert.deepEqual(undelivered.map((e) => [e.seq, e.pending]), [[c, [0, 1]], [c + 1, [0]]]);
      journal.rewound();
      journal.close();
      ({ journal, undelivered } = NotificationJournal.open(dir, silentLogger, 0));
      assert.deepEqual(undelivered.map((e) => [e.seq, e.pending]), [[a, [2]], [b, [0, 3]], [c, [0, 1]], [c + 1, [0]]]);

      journal.confirm({ seq: c + 1, index: 0 });
      journal.allConfirmed();
      assert.equal((await readFile(path.join(dir, JOURNAL_FILE), 'utf8')).length, 0, 'truncated when everything is confirmed');
      journal.close();
      ({ journal, undelivered } = NotificationJournal.open(dir, silentLogger, 0));
      assert.deepEqual(undelivered, []);
      journal.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ignores a line cut short at the end (a power loss mid-write)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'hermod-journal-'));
    try {
      const { journal } = NotificationJournal.open(dir, silentLogger);
      journal.append(event('a'), recipients(1));
      journal.close();
      const { appendFile } = await import('node:fs/promises');
      await appendFile(path.join(dir, JOURNAL_FILE), '{"q":1,"e":{"kind":"ite');
      const reopened = NotificationJournal.open(dir, silentLogger);
      assert.deepEqual(reopened.undelivered.map((e) => e.seq), [0]);
      reopened.journal.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

class FakeSocket implements OutboxSocket {
  chunks: string[] = [];
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }
  once(): unknown {
    return this;
  }
  removeListener(): unknown {
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
  it('several Hermods on one component JID: a barrier that reached another process is sent on until it is back with its own', async () => {
    const confirmed: DurableTag[] = [];
    const mine = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', onConfirmed: (t) => confirmed.push(t) });
    const other = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x' });
    const [mySocket, otherSocket] = [new FakeSocket(), new FakeSocket()];
    mine.attach(mySocket);
    other.attach(otherSocket);
    mine.push(['<m1/>'], { seq: 0, firstIndex: 0 });
    await tick();
    const [id] = mySocket.barriers();
    const request = (i: string): Element => new Element('iq', { type: 'get', id: i, from: 'pubsub.x', to: 'pubsub.x' });
    assert.equal(other.acknowledge(request(id as string)), true, 'taken, not handled as a request');
    const [relayed] = otherSocket.barriers();
    assert.equal(relayed, `${id}.`);
    assert.deepEqual(confirmed, []);
    assert.equal(mine.acknowledge(request(relayed as string)), true);
    assert.deepEqual(confirmed, [{ seq: 0, index: 0 }]);
    // One that went round too often is dropped.
    other.acknowledge(request(`${id}${'.'.repeat(16)}`));
    assert.equal(otherSocket.barriers().length, 1);
  });

  it('confirms only what a returned barrier covers; after a disconnect writes the unconfirmed durable stanzas again, not the others', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 10, onConfirmed: (t) => confirmed.push(t) });
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

  it('one barrier in flight confirms any number of chunks: each durable stanza only once a barrier written after it is back', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 10, onConfirmed: (t) => confirmed.push(t) });
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

  it('a barrier that never comes back does not stop confirmations: an overdue one is followed by another', async () => {
    const confirmed: DurableTag[] = [];
    const outbox = new Outbox({ log: silentLogger, barrierJid: 'pubsub.x', chunkBytes: 10, barrierTimeoutMs: 50, onConfirmed: (t) => confirmed.push(t) });
    const socket = new FakeSocket();
    outbox.attach(socket);
    outbox.push(['<a/>', '<b/>'], { seq: 0, firstIndex: 0 });
    await tick();
    const [lost] = socket.barriers();
    assert.ok(lost);
    await new Promise((resolve) => setTimeout(resolve, 120)); // the server lost it (or routed it elsewhere)
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
});
