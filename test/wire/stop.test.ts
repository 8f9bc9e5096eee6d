// Hermod stopping while requests are under way (src/app/component.ts Wire.idle, Router.close): a
// request taken before the stop is answered — also when its notifications take a while to be in
// the journal (the CouchDB store), which the stop used not to wait for: the reply was lost, and a
// publisher retrying a publish that took effect made a second item. A request arriving once the
// stop began is answered `resource-constraint` (wait): try again later, nothing done.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JOURNAL_SPACE } from '../../src/component/journal.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateSpace } from '../../src/store/store.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { PUBSUB } from '../e2e/client.ts';
import { create, entry, subscribe } from '../e2e/fixtures.ts';
import { WireHarness } from './harness.ts';

const SVC = 'pubsub.a.example';
const ALICE = 'alice@a.example/desk';
const BOB = 'bob@a.example/phone';
const publish = (id: string): string => `<pubsub xmlns='${PUBSUB}'><publish node='n'><item id='${id}'>${entry(id)}</item></publish></pubsub>`;

/** A memory store whose journal writes take `journalDelayMs` (as a CouchDB store's do). */
class SlowJournalStore extends MemoryStore {
  journalDelayMs = 0;
  override state(namespace: string): StateSpace {
    const space = super.state(namespace);
    if (namespace !== JOURNAL_SPACE) return space;
    const batch: StateSpace['batch'] = async (ops) => {
      if (this.journalDelayMs > 0) await new Promise((r) => setTimeout(r, this.journalDelayMs));
      return space.batch(ops);
    };
    return { ...space, get: space.get.bind(space), getMany: space.getMany.bind(space), range: space.range.bind(space), swap: space.swap.bind(space), batch };
  }
}

describe('stopping with requests under way', () => {
  it('a publish taken before the stop is answered after its notifications are in the journal; a request during the stop gets resource-constraint (wait)', async () => {
    const store = new SlowJournalStore();
    const wire = await WireHarness.start({ jid: SVC, store });
    let stopped = false;
    try {
      await wire.ok(ALICE, 'set', create('n', { 'pubsub#access_model': 'open' }));
      await wire.ok(BOB, 'set', subscribe('n', BOB));
      store.journalDelayMs = 300;
      const alice = wire.client(ALICE);
      const first = alice.iq('set', SVC, publish('before-stop')).then(
        (r) => r,
        (err: unknown) => (err instanceof IqError && err.stanza ? err.stanza : err),
      );
      // Dispatched (the item is stored), its notification not yet in the journal.
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      const stopping = wire.stop().then(() => (stopped = true));
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      const during = await alice.iq('set', SVC, publish('during-stop')).then(
        (r) => r,
        (err: unknown) => (err instanceof IqError && err.stanza ? err.stanza : err),
      );
      const reply = await first;
      assert.ok(!(reply instanceof Error), `the publish taken before the stop was answered (got ${String(reply)})`);
      assert.equal((reply as { attrs: Record<string, string> }).attrs.type, 'result', String(reply));
      assert.ok(!(during instanceof Error), String(during));
      const refusal = IqError.of(during as never);
      assert.deepEqual([refusal.type, refusal.condition], ['wait', 'resource-constraint']);
      assert.match(refusal.text ?? '', /stopping/);
      await stopping;
    } finally {
      if (!stopped) await wire.stop().catch(() => undefined);
    }
  });
});
