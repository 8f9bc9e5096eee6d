// What replication's publishes wait for (src/app/publish-gate.ts), with a real notification
// journal and outbox: a store that refuses the journal's writes, or a server that is down, must
// not hold Hermod's stop; a stop lets held publishes go on, and ends waits for the journal after
// its bound with an error (the source then does not record the batch: published again at start).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JOURNAL_SPACE, NotificationJournal } from '../../src/component/journal.ts';
import { Outbox, ProducerStopped } from '../../src/component/outbox.ts';
import { JournalNotDurable, PublishGate, type PublishGateOptions } from '../../src/app/publish-gate.ts';
import { silentLogger } from '../../src/log.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateSpace } from '../../src/store/store.ts';

const event = (id: string): ServiceEvent => ({ kind: 'items', node: 'n', item: { id, payload: `<p xmlns="urn:x">${id}</p>`, publisher: 'a@x', published: 1 }, withPayload: true });
const recipients = (n: number): Recipient[] => Array.from({ length: n }, (_, i) => ({ jid: `s${i}@x`, subid: `sub${i}` }));

/** A state space whose batches fail while `down.value` (the store refusing writes). */
function switchable(space: StateSpace, down: { value: boolean }): StateSpace {
  return new Proxy(space, {
    get(target, prop, receiver) {
      if (prop === 'batch') return (ops: Parameters<StateSpace['batch']>[0]) => (down.value ? Promise.reject(new Error('store down')) : target.batch(ops));
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A gate on a real journal (memory store, healthy) and an outbox with `limit`, never attached (the server down). */
async function gateOn(limit: number | undefined, options: PublishGateOptions): Promise<{ journal: NotificationJournal; outbox: Outbox; gate: PublishGate; close(): Promise<void> }> {
  const store = new MemoryStore();
  await store.open();
  const { journal } = await NotificationJournal.open(store.state(JOURNAL_SPACE), 'm1', silentLogger);
  const outbox = new Outbox({ log: silentLogger, ...(limit === undefined ? {} : { limit }) });
  const gate = new PublishGate(journal, outbox, options);
  return {
    journal,
    outbox,
    gate,
    close: async () => {
      await journal.close();
      await store.close();
    },
  };
}

describe('publish gate: what a replication publish waits for, bounded by a stop', () => {
  it('a wait for a journal whose store refuses writes ends stopWaitMs after the stop, with an error; the journal still closes', async () => {
    const store = new MemoryStore();
    await store.open();
    const down = { value: false };
    const { journal } = await NotificationJournal.open(switchable(store.state(JOURNAL_SPACE), down), 'm1', silentLogger);
    const outbox = new Outbox({ log: silentLogger });
    const gate = new PublishGate(journal, outbox, { backlogChars: 1024, backlogWaitMs: 1_000, stopWaitMs: 100 });
    journal.append(event('a'), recipients(1));
    await gate.passed(); // the store takes it: at once
    down.value = true;
    journal.append(event('b'), recipients(1));
    let outcome: unknown = 'waiting';
    const waiting = gate.passed().then(
      () => 'passed',
      (err: unknown) => err,
    );
    void waiting.then((o) => (outcome = o));
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(outcome, 'waiting', 'before a stop it waits for the store, however long');
    const stoppedAt = Date.now();
    gate.stop();
    const result = await waiting;
    assert.ok(result instanceof JournalNotDurable, String(result));
    assert.match(String(result), /published again at the next start/);
    assert.ok(Date.now() - stoppedAt >= 90, 'the journal had its bound to take the writes');
    // A wait begun during the stop has a bound of its own; once the store takes writes again, a
    // wait passes (a give-up is not for good: the D-Bus source hands over what waits for 30 s).
    journal.append(event('c'), recipients(1));
    const during = Date.now();
    await assert.rejects(gate.passed(), JournalNotDurable);
    assert.ok(Date.now() - during >= 90, 'its own bound, not the stop\'s');
    down.value = false;
    await journal.durable(); // its retry takes what waited
    journal.append(event('d'), recipients(1));
    await gate.passed();
    await journal.close(1_000);
    await store.close();
  });

  it('a wait during the stop with a journal that is fine passes, however long after the stop', async () => {
    const { journal, outbox, gate, close } = await gateOn(undefined, { backlogChars: 1024, backlogWaitMs: 1_000, stopWaitMs: 50 }); // the outbox never attached: the server down
    gate.stop();
    await new Promise((r) => setTimeout(r, 80));
    journal.append(event('late'), recipients(1));
    await gate.passed();
    await close();
  });

  it('a publish held while the server is down is refused when Hermod stops (published again at the next start); before, it stays held', async () => {
    const { journal, outbox, gate, close } = await gateOn(undefined, { backlogChars: 10, backlogWaitMs: 20, stopWaitMs: 5_000 }); // the outbox never attached: the server down
    outbox.push(['<message id="x">more than ten characters</message>']);
    let settled = false;
    const waiting = gate.passed().finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(settled, false, 'held past backlogWaitMs: nothing is connected');
    gate.stop();
    await assert.rejects(waiting, ProducerStopped);
    assert.equal(outbox.dropped, 0);
    await close();
  });

  it('after a stop with the server down, a producer publishes nothing more: the outbox drops nothing', async () => {
    const { journal, outbox, gate, close } = await gateOn(10, { backlogChars: 0, backlogWaitMs: 20, stopWaitMs: 1_000 }); // the outbox never attached: the server down
    gate.stop();
    let published = 0;
    const producer = (async () => {
      for (let seq = 0; seq < 20; seq++) {
        outbox.push([`<message id='n${seq}'/>`], { seq, firstIndex: 0 });
        published++;
        await gate.passed();
      }
    })();
    await assert.rejects(producer, ProducerStopped);
    assert.equal(published, 1);
    assert.equal(outbox.dropped, 0);
    await close();
  });

  it('a start stopped while the store refuses the journal\'s opening writes ends there (the retries would keep the process alive); what the store held stays', async () => {
    const store = new MemoryStore();
    await store.open();
    const down = { value: false };
    const space = switchable(store.state(JOURNAL_SPACE), down);
    const first = await NotificationJournal.open(space, 'm1', silentLogger);
    first.journal.append(event('kept'), recipients(1));
    await first.journal.durable();
    down.value = true; // closing cannot clear it either: it stays undelivered in the store
    await first.journal.close(50);
    const abort = new AbortController();
    const opening = NotificationJournal.open(space, 'm1', silentLogger, { signal: abort.signal });
    setTimeout(() => abort.abort(), 100);
    const started = Date.now();
    let bound: NodeJS.Timeout | undefined;
    const stillOpening = new Promise<never>((_, reject) => (bound = setTimeout(() => reject(new Error('still opening 5 s after the abort')), 5_000)));
    await assert.rejects(Promise.race([opening, stillOpening]), /stopped before the store took its writes/);
    clearTimeout(bound);
    assert.ok(Date.now() - started < 2_000, 'ended by the abort, not by a retry succeeding');
    down.value = false;
    const again = await NotificationJournal.open(space, 'm1', silentLogger);
    assert.deepEqual(again.undelivered.map((e) => (e.event as { item: { id: string } }).item.id), ['kept']);
    await again.journal.close();
    await store.close();
  });
});
