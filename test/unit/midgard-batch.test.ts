// Midgard records in batches (issue 15 item 5): the publisher keeps what it records while
// handling (documents, nodes, hashes, topics, persons) and writes it in one store write per
// batch (flush, called by the feeds), its own reads seeing it at once. A crash before the flush
// loses only the record, not a publication: the object is published again when it comes again.
// A batch is published in few publishMany calls per node (handleBatch): versions of one object
// keep their order, a bad object is skipped (its outcome says why) without the others.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { article } from '../../bench/lib/midgard-objects.ts';
import { MidgardFormatError } from '../../src/codecs/midgard.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { silentLogger, type Logger } from '../../src/log.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { DEFAULT_MAPPING, TopicIndex } from '../../src/replication/midgard-mapping.ts';
import { MidgardPublisher, type MidgardInput } from '../../src/replication/midgard-publisher.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateSpace } from '../../src/store/store.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');
const ACTOR = 'pubsub.a.test';
const ARTICLE = '29a8d8f0a9823c53fba2b3f96b59e8ec';

/** A memory state space counting its store writes, and a pub/sub service on a memory store. */
function countedSetup(): { space: StateSpace; counted: StateSpace; writes: () => number; service: PubsubService } {
  const space = new MemoryStore().state('midgard');
  let n = 0;
  const counted: StateSpace = { get: (k) => space.get(k), getMany: (k) => space.getMany(k), range: (p, o) => space.range(p, o), batch: (ops) => (n++, space.batch(ops)), swap: (k, e, n) => space.swap(k, e, n) };
  const service = new PubsubService({ store: new MemoryStore(), admins: [ACTOR], mayCreateNodes: () => false, notifier: () => {} });
  return { space, counted, writes: () => n, service };
}

/** A publisher on `service` (open nodes, the default mapping) recording in `space`; its info lines go to `lines`. */
function publisherOn(service: PubsubService, space: StateSpace, lines: Array<Record<string, unknown>> = []): MidgardPublisher {
  const log: Logger = { ...silentLogger, info: (msg, fields) => void lines.push({ msg, ...fields }), child: () => log };
  return new MidgardPublisher({
    service,
    actor: ACTOR,
    mapping: DEFAULT_MAPPING,
    access: () => ({ accessModel: 'open' as const, whitelist: [] }),
    partnerJid: { property: 'jid', parameter: undefined },
    log,
    onPartner: () => {},
    state: new ReplicationState(space),
    index: new TopicIndex(),
  });
}

describe('Midgard publisher: records written once per batch', () => {
  it('a batch of objects (two topics, an article, the article again) is recorded in one store write; the records are what the next run reads', async () => {
    const { space, counted, writes, service } = countedSetup();
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
    assert.equal(writes(), 0, 'nothing written before the flush');
    await publisher.flush();
    assert.equal(writes(), 1, 'the batch recorded in one store write');
    await publisher.flush();
    assert.equal(writes(), 1, 'nothing left to write');

    // A later run (a restart) reads those records: the article is known and not published again.
    const next = new MidgardPublisher({ ...options, state: new ReplicationState(space), index: new TopicIndex() });
    await next.restore();
    await next.handle(await fixture('article-hello.xml'), { ...origin, action: 'update' });
    assert.equal(next.published, 0, 'the flushed records carry over');
    assert.deepEqual((await new ReplicationState(space).nodesOf(ARTICLE)).length > 0, true, 'its nodes recorded');
  });
});

describe('Midgard publisher: a batch of D-Bus signals', () => {
  it('is published whole: versions of one object in order, a malformed object skipped with its reason, the others published, one store write', async () => {
    const { counted, writes, service } = countedSetup();
    const lines: Array<Record<string, unknown>> = [];
    const publisher = publisherOn(service, counted, lines);
    const signal = (xml: string, action = 'create'): MidgardInput => ({ text: xml, origin: { source: 'dbus', area: 'mgdschema', action } });
    // 60 articles; one of them in three versions spread over the batch; a malformed signal among them.
    const inputs = Array.from({ length: 60 }, (_, i) => signal(article('batch', i).xml));
    const x = article('batch', 7);
    inputs.splice(20, 0, signal(article('batch', 7, 2).xml, 'update'));
    inputs.splice(25, 0, signal(await fixture('malformed.xml'), 'update'));
    inputs.splice(45, 0, signal(article('batch', 7, 3).xml, 'update'));
    const outcomes = await publisher.handleBatch(inputs);
    assert.equal(outcomes.filter((o) => o !== 'done').length, 1, 'one object failed');
    const bad = outcomes[25];
    assert.ok(bad !== 'done' && bad?.error instanceof MidgardFormatError, 'the malformed one, with the format error');
    const items = await service.getItems(ACTOR, '/midgard_article/all');
    assert.equal(new Set(items.map((i) => i.id)).size, 60, 'every good article on its node');
    const latest = items.find((i) => i.id === x.guid);
    assert.match(String(latest?.payload), /<revision>3<\/revision>/, 'the last version of the object is the one published last');
    const revisions = lines.filter((l) => l.msg === 'published midgard object' && l.guid === x.guid).map((l) => l.revised);
    assert.deepEqual(revisions, ['2026-11-30 00:00:01+0000', '2026-11-30 00:00:02+0000', '2026-11-30 00:00:03+0000'], 'its versions published in signal order');
    assert.equal(writes(), 0, 'nothing written before the flush');
    await publisher.flush();
    assert.equal(writes(), 1, 'the batch recorded in one store write');
    // The records say the last version was published: the same signal again publishes nothing.
    const before = publisher.published;
    assert.deepEqual(await publisher.handleBatch([signal(article('batch', 7, 3).xml, 'update')]), ['done']);
    assert.equal(publisher.published, before, 'unchanged: not published again');
  });

  it('a publish the node refuses fails that object only: the objects after it in the batch are published, and the refused one is not recorded, so it is tried again', async () => {
    const { counted, service } = countedSetup();
    // The node exists with a small payload bound: the larger articles are refused (payload-too-big).
    await service.create(ACTOR, '/midgard_article/all', { maxPayloadSize: 3600 });
    const publisher = new MidgardPublisher({
      service,
      actor: ACTOR,
      mapping: { ...DEFAULT_MAPPING, approved: false },
      access: () => ({ accessModel: 'open' as const, whitelist: [] }),
      partnerJid: { property: 'jid', parameter: undefined },
      log: silentLogger,
      onPartner: () => {},
      state: new ReplicationState(counted),
      index: new TopicIndex(),
    });
    const objects = Array.from({ length: 40 }, (_, i) => article('refused', i));
    const outcomes = await publisher.handleBatch(objects.map((a) => ({ text: a.xml, origin: { source: 'dbus', area: 'mgdschema', action: 'create' } })));
    const refused = outcomes.flatMap((o, i) => (o !== 'done' && o.error instanceof PubsubError && o.error.condition === 'payload-too-big' ? [i] : []));
    assert.ok(refused.length > 0 && refused.length < objects.length, `some refused, some not: ${JSON.stringify(refused)}`);
    assert.equal(outcomes.filter((o) => o !== 'done').length, refused.length, 'no other failure');
    const ids = new Set((await service.getItems(ACTOR, '/midgard_article/all')).map((i) => i.id));
    assert.deepEqual(objects.flatMap((a, i) => (ids.has(a.guid) ? [] : [i])), refused, 'every other object published, also those after a refused one');
    // Not recorded as published: the same signal is tried (and refused) again, not taken as unchanged.
    const [again] = await publisher.handleBatch([{ text: (objects[refused[0] as number] as { xml: string }).xml, origin: { source: 'dbus', area: 'mgdschema', action: 'update' } }]);
    assert.ok(again !== 'done' && again?.error instanceof PubsubError);
  });
});

/** A memory store counting the publish writes (Store.publishMany calls) per node. */
class CountingStore extends MemoryStore {
  readonly publishWrites = new Map<string, number>();
  /** Publish writes still to fail (as a store failing for a moment would). */
  failWrites = 0;
  override publishMany(...args: Parameters<MemoryStore['publishMany']>): ReturnType<MemoryStore['publishMany']> {
    this.publishWrites.set(args[0], (this.publishWrites.get(args[0]) ?? 0) + 1);
    if (this.failWrites > 0) {
      this.failWrites--;
      return Promise.reject(new Error('the store is failing'));
    }
    return super.publishMany(...args);
  }
}

describe('Midgard publisher: a batch goes to each node in few publish writes', () => {
  const setup = (): { store: CountingStore; service: PubsubService; publisher: MidgardPublisher; lines: Array<Record<string, unknown>> } => {
    const store = new CountingStore();
    const service = new PubsubService({ store, admins: [ACTOR], mayCreateNodes: () => false, notifier: () => {} });
    const lines: Array<Record<string, unknown>> = [];
    const publisher = publisherOn(service, new MemoryStore().state('midgard'), lines);
    return { store, service, publisher, lines };
  };
  const signal = (xml: string, action = 'create'): MidgardInput => ({ text: xml, origin: { source: 'dbus', area: 'mgdschema', action } });
  const approved = (xml: string): string => xml.replace('<isapproved>0</isapproved>', '<isapproved>1</isapproved>');

  it('600 objects, every tenth approved: every object on its nodes in signal order, in chunks of at most 250 per write', async () => {
    const { store, service, publisher } = setup();
    const objects = Array.from({ length: 600 }, (_, i) => article('many', i));
    const outcomes = await publisher.handleBatch(objects.map((a, i) => signal(i % 10 === 0 ? approved(a.xml) : a.xml)));
    assert.ok(outcomes.every((o) => o === 'done'));
    assert.deepEqual((await service.getItems(ACTOR, '/midgard_article/all')).map((i) => i.id), objects.map((a) => a.guid), 'every object, in signal order');
    assert.deepEqual((await service.getItems(ACTOR, '/midgard_article/approved')).map((i) => i.id), objects.filter((_, i) => i % 10 === 0).map((a) => a.guid), 'the approved ones, in signal order');
    assert.deepEqual(Object.fromEntries(store.publishWrites), { '/midgard_article/all': 3, '/midgard_article/approved': 1 }, 'one publish write per 250 entries of a node, not one per object');
  });

  it('a publish write failing once fails one object only (a D-Bus signal is not replayed): the others of its chunk are published', async () => {
    const { store, service, publisher } = setup();
    store.failWrites = 1;
    const objects = Array.from({ length: 100 }, (_, i) => article('flaky', i));
    const outcomes = await publisher.handleBatch(objects.map((a) => signal(a.xml)));
    assert.deepEqual(outcomes.flatMap((o, i) => (o === 'done' ? [] : [[i, o.error instanceof Error ? o.error.message : o.error]])), [[0, 'the store is failing']], 'the first object failed, with the reason');
    assert.deepEqual((await service.getItems(ACTOR, '/midgard_article/all')).map((i) => i.id), objects.slice(1).map((a) => a.guid), 'every other object published, in order');
  });

  it('an object approved, unapproved, approved again in one batch ends on the approved node: a retraction never overtakes a later publication', async () => {
    const { service, publisher, lines } = setup();
    const x = article('moves', 0);
    const inputs = Array.from({ length: 30 }, (_, i) => signal(article('moves', i + 1).xml));
    inputs.splice(5, 0, signal(approved(x.xml)));
    inputs.splice(12, 0, signal(article('moves', 0, 2).xml, 'update'));
    inputs.splice(20, 0, signal(approved(article('moves', 0, 3).xml), 'update'));
    assert.ok((await publisher.handleBatch(inputs)).every((o) => o === 'done'));
    const onApproved = await service.getItems(ACTOR, '/midgard_article/approved');
    assert.deepEqual(onApproved.map((i) => i.id), [x.guid], 'on the approved node again');
    assert.match(String(onApproved[0]?.payload), /<revision>3<\/revision>/);
    const revisions = lines.filter((l) => l.msg === 'published midgard object' && l.guid === x.guid).map((l) => [l.revised, l.retractedFrom]);
    assert.deepEqual(revisions, [['2026-11-30 00:00:01+0000', []], ['2026-11-30 00:00:02+0000', ['/midgard_article/approved']], ['2026-11-30 00:00:03+0000', []]], 'its versions in signal order');
    assert.equal((await service.getItems(ACTOR, '/midgard_article/all')).length, 31);
  });
});
