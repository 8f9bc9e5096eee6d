// Midgard records in batches (issue 15 item 5): the publisher keeps what it records while
// handling (documents, nodes, hashes, topics, persons) and writes it in one store write per
// batch (flush, called by the feeds), its own reads seeing it at once. A crash before the flush
// loses only the record, not a publication: the object is published again when it comes again.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../../src/log.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { DEFAULT_MAPPING, TopicIndex } from '../../src/replication/midgard-mapping.ts';
import { MidgardPublisher } from '../../src/replication/midgard-publisher.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateSpace } from '../../src/store/store.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');
const ACTOR = 'pubsub.a.test';
const ARTICLE = '29a8d8f0a9823c53fba2b3f96b59e8ec';

describe('Midgard publisher: records written once per batch', () => {
  it('a batch of objects (two topics, an article, the article again) is recorded in one store write; the records are what the next run reads', async () => {
    const store = new MemoryStore();
    const space = store.state('midgard');
    let writes = 0;
    const counted: StateSpace = { get: (k) => space.get(k), getMany: (k) => space.getMany(k), range: (p, o) => space.range(p, o), batch: (ops) => (writes++, space.batch(ops)), swap: (k, e, n) => space.swap(k, e, n) };
    const service = new PubsubService({ store: new MemoryStore(), admins: [ACTOR], mayCreateNodes: () => false, notifier: () => {} });
    const options = {
      service,
      actor: ACTOR,
      mapping: DEFAULT_MAPPING,
      access: () => ({ accessModel: 'open' as const, whitelist: [] }),
      partnerJid: { property: 'jid', parameter: undefined },
      log: silentLogger,
      onPartner: () => {},
    };
    const publisher = new MidgardPublisher({ ...options, state: new ReplicationState(counted), index: new TopicIndex() });
    const origin = { source: 'dbus' as const, area: 'mgdschema', action: 'create' };
    for (const name of ['topic-site.xml', 'topic-news.xml', 'article-hello.xml']) await publisher.handle(await fixture(name), origin);
    const published = publisher.published;
    assert.ok(published >= 1);
    // The same article again: the publisher's own (unwritten) record says it is unchanged.
    await publisher.handle(await fixture('article-hello.xml'), { ...origin, action: 'update' });
    assert.equal(publisher.published, published, 'not published again: recognised as unchanged before any flush');
    assert.equal(writes, 0, 'nothing written before the flush');
    await publisher.flush();
    assert.equal(writes, 1, 'the batch recorded in one store write');
    await publisher.flush();
    assert.equal(writes, 1, 'nothing left to write');

    // A later run (a restart) reads those records: the article is known and not published again.
    const next = new MidgardPublisher({ ...options, state: new ReplicationState(space), index: new TopicIndex() });
    await next.restore();
    await next.handle(await fixture('article-hello.xml'), { ...origin, action: 'update' });
    assert.equal(next.published, 0, 'the flushed records carry over');
    assert.deepEqual((await new ReplicationState(space).nodesOf(ARTICLE)).length > 0, true, 'its nodes recorded');
  });
});
