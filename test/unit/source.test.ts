// The Source contract as the shared replication uses it (src/sources/source.ts): each batch's
// checkpoint is saved only once its changes are published, so a restart resumes right after the
// last published batch — a batch whose publish failed is handed over again, none is skipped.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReplicationState } from '../../src/replication/state.ts';
import { startSource, type BatchHandler, type Checkpoint, type Source } from '../../src/sources/source.ts';
import { MemoryStore } from '../../src/store/memory.ts';

/** A source over a fixed list of batches (checkpoint = index of the batch's last change + 1). */
class ListSource implements Source<string> {
  readonly feed = 'list:test';
  startedFrom: Checkpoint | undefined;
  constructor(private readonly batches: string[][]) {}
  async start(since: Checkpoint | undefined, handle: BatchHandler<string>): Promise<void> {
    this.startedFrom = since;
    let position = 0;
    for (const changes of this.batches) {
      position += changes.length;
      if (position <= Number(since ?? 0)) continue;
      try {
        await handle({ changes, checkpoint: position });
      } catch {
        return; // as the CouchDB source on stop: the checkpoint stays before this batch
      }
    }
  }
  async stop(): Promise<void> {}
}

describe('sources: checkpoints', () => {
  it('a checkpoint is saved after its batch is published; a restart resumes after the last one published', async () => {
    const state = new ReplicationState(new MemoryStore().state('replication'));
    const batches = [['a', 'b'], ['c'], ['d', 'e'], ['f']];
    const published: string[] = [];
    const first = new ListSource(batches);
    await startSource(first, state, async (changes) => {
      if (changes.includes('d')) throw new Error('the service is down');
      published.push(...changes);
    });
    assert.equal(first.startedFrom, undefined, 'a first start begins at the beginning');
    assert.deepEqual(published, ['a', 'b', 'c']);
    assert.equal(await state.checkpoint('list:test'), 3, 'the failed batch left the checkpoint before it');
    const second = new ListSource(batches);
    await startSource(second, state, async (changes) => void published.push(...changes));
    assert.equal(second.startedFrom, 3);
    assert.deepEqual(published, ['a', 'b', 'c', 'd', 'e', 'f'], 'each change published once, in order');
    assert.equal(await state.checkpoint('list:test'), 6);
  });
});
