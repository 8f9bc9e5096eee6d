// PublishRetries (src/replication/publish-retries.ts) on its own: documents that failed for a
// reason that may pass are handed over again one at a time; after one fails again the others wait
// for its next try; entries kept in a state survive a restart with the change that failed.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PublishRetries, RETRY_KIND, type RetryRecord } from '../../src/replication/publish-retries.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { captureLog } from './capture-log.ts';

/** Resolves once `check` holds (polled every 5 ms); rejects naming `what` after 5 s. */
async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (const deadline = Date.now() + 5_000; !(await check()); ) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('PublishRetries', () => {
  it('hands over one document at a time; after one fails again nothing is handed over before its next try; once they go through, all are published', async () => {
    const log = captureLog();
    const retries = new PublishRetries<string>({ feed: 'retry:test', log, firstMs: 40, maxMs: 160 });
    for (const id of ['a', 'b', 'c']) retries.failed(undefined, id, 'no answer', `item-${id}`);
    let up = false;
    const handed: Array<{ id: string; at: number }> = [];
    await retries.start(undefined, async ({ changes }) => {
      assert.equal(changes.length, 1, 'one at a time');
      const item = changes[0] as string;
      const id = item.slice('item-'.length);
      handed.push({ id, at: Date.now() });
      if (up) retries.succeeded(undefined, id);
      else retries.failed(undefined, id, 'still no answer', item);
    });
    try {
      await until(() => handed.length >= 4, 'four attempts');
      // Each failed again: the next attempt (of whichever waited longest) only after its wait.
      const at = handed.map((h) => h.at);
      for (let i = 1; i < 4; i++) assert.ok((at[i] as number) - (at[i - 1] as number) >= 70, `attempt ${i + 1} ${(at[i] as number) - (at[i - 1] as number)} ms after the one before (${handed.map((h) => h.id).join(' ')})`);
      assert.deepEqual(handed.slice(0, 3).map((h) => h.id).sort(), ['a', 'b', 'c'], 'the oldest due first');
      up = true;
      await until(() => retries.size === 0, 'all published once the service answers');
      assert.equal(log.lines.filter((l) => l.msg === 'document published after failed attempts').length, 3);
    } finally {
      await retries.stop();
    }
  });

  it('retryNow (the component online again) hands over at once what waited, a pause included', async () => {
    const retries = new PublishRetries<string>({ feed: 'retry:test', log: captureLog(), firstMs: 60_000 });
    retries.failed(undefined, 'a', 'component offline', 'item-a');
    retries.failed(undefined, 'b', 'component offline', 'item-b');
    const handed: string[] = [];
    await retries.start(undefined, async ({ changes }) => {
      handed.push(...changes);
      for (const item of changes) retries.succeeded(undefined, item.slice('item-'.length));
    });
    try {
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(handed, [], 'nothing before the first wait (60 s)');
      retries.retryNow();
      await until(() => handed.length === 2, 'both handed over');
      assert.deepEqual(handed.sort(), ['item-a', 'item-b']);
    } finally {
      await retries.stop();
    }
  });

  it('retryNow while an attempt of before the reconnection is under way: its failure pauses nothing', async () => {
    const retries = new PublishRetries<string>({ feed: 'retry:test', log: captureLog(), firstMs: 60_000, maxMs: 600_000 });
    retries.failed(undefined, 'a', 'no answer', 'item-a');
    retries.failed(undefined, 'b', 'no answer', 'item-b');
    let release: () => void = () => undefined;
    const handed: string[] = [];
    let online = false;
    await retries.start(undefined, async ({ changes }) => {
      const item = changes[0] as string;
      const id = item.slice('item-'.length);
      handed.push(id);
      if (handed.length === 1) await new Promise<void>((r) => (release = r)); // a request sent before the connection dropped
      if (online && handed.length > 1) retries.succeeded(undefined, id);
      else retries.failed(undefined, id, 'no answer (sent before the reconnection)', item);
    });
    try {
      retries.retryNow(); // an earlier reconnection: the first attempt goes, and hangs
      await until(() => handed.length === 1, 'the first attempt under way');
      online = true;
      retries.retryNow(); // online again while that attempt is under way
      release(); // it fails: without the nudge the others would wait its next try (2 min)
      await until(() => retries.size === 0, 'both published right after the reconnection');
    } finally {
      await retries.stop();
    }
  });

  it('with a state, entries are written with the batch and read at start with their item, tried at once; a handler that fails counts as a failed attempt', async () => {
    const state = new ReplicationState(new MemoryStore().state('replication'));
    const before = new PublishRetries<{ id: string; revs: string[] }>({ state, feed: 'retry:test', log: captureLog() });
    const batch = state.batch();
    before.failed(batch, 'doc', 'no answer', { id: 'doc', revs: ['2-b'] });
    await state.commit(batch);
    assert.deepEqual(await state.records<RetryRecord>(RETRY_KIND), [['doc', { since: (await state.records<RetryRecord>(RETRY_KIND))[0]?.[1].since, tries: 1, reason: 'no answer', item: { id: 'doc', revs: ['2-b'] } }]]);

    const log = captureLog();
    const after = new PublishRetries<{ id: string; revs: string[] }>({ state, feed: 'retry:test', log, firstMs: 1_000 });
    const handed: Array<{ id: string; revs: string[] }> = [];
    const started = Date.now();
    await after.start(undefined, async ({ changes }) => {
      handed.push(...changes);
      throw new Error('the store is failing');
    });
    try {
      await until(() => handed.length >= 1, 'tried at once after the restart');
      assert.ok(Date.now() - started < 900, 'not after the first wait');
      assert.deepEqual(handed[0], { id: 'doc', revs: ['2-b'] });
      await until(() => log.lines.some((l) => l.msg === 'publishing a document again failed'), 'the failure logged');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(handed.length, 1, 'not tried again before its wait');
      assert.ok(after.has('doc'), 'still waiting');
    } finally {
      await after.stop();
    }
  });
});
