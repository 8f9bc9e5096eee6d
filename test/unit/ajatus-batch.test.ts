// The batched Ajatus source (issue 15): a batch of changes is read with one `_bulk_get` from a
// real pouchdb-server, published pipelined (pipeline.ts) to a real PubsubService, and its
// replication state written in one store write; what the state already knows is skipped without
// asking CouchDB; a publish that fails mid-batch records only the documents that completed.

import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, it } from 'node:test';
import nano from 'nano';
import { jsonCodec, type CouchDoc } from '../../src/codecs/couch-doc.ts';
import { startCouch, type CouchServer } from '../../src/devenv/couchdb.ts';
import { silentLogger } from '../../src/log.ts';
import { PubsubService, type PublishOutcome, type PublishRequest } from '../../src/pubsub/service.ts';
import { AjatusPublisher, ImportNotes, type AjatusPublisherOptions } from '../../src/replication/ajatus-publisher.ts';
import { UploadRefused, type HttpUploader } from '../../src/replication/http-upload.ts';
import { runPipelined, type PipelineStep } from '../../src/replication/pipeline.ts';
import { PublishRetries, RETRY_KIND, type RetryRecord } from '../../src/replication/publish-retries.ts';
import { PROFILES, type Profile } from '../../src/replication/profile.ts';
import { AppSettings } from '../../src/replication/settings.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { bulkGetRevisions, changeOf, CouchChangesSource, type Change, type ChangesRow } from '../../src/sources/couchdb-changes.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateSpace } from '../../src/store/store.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { captureLog } from './capture-log.ts';

const ACTOR = 'hermod.alpha.test';
const DB = 'content';

const note = (id: string, tags: string[]): Record<string, unknown> & { _id: string } => ({
  _id: id,
  value: { _type: 'note', title: { val: id }, tags: { val: tags }, metadata: { creator: { val: 'alice' }, revised: { val: '2026-11-30T10:00:00Z' }, deleted: { val: false } } },
});

/** The database's whole feed, as the source hands it over (`style=all_docs`). */
async function changes(couch: CouchServer, db = DB): Promise<Change[]> {
  const { json } = await couch.request('GET', `${db}/_changes?style=all_docs`);
  return (json.results as ChangesRow[]).map(changeOf);
}

/** Resolves once `check` holds (polled every 10 ms); rejects naming `what` after 10 s. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; !(await check()); ) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A state space that counts its writes. */
function counting(space: StateSpace): { space: StateSpace; writes: () => number } {
  let writes = 0;
  return {
    space: { get: (k) => space.get(k), getMany: (k) => space.getMany(k), range: (p, o) => space.range(p, o), batch: (ops) => (writes++, space.batch(ops)), swap: (k, e, n) => space.swap(k, e, n) },
    writes: () => writes,
  };
}

/** A service whose publish of one item fails (as a failing store would: the whole write with it) while `failing` is set. */
class FlakyService extends PubsubService {
  failing: string | undefined;
  override async publishMany(actor: string, node: string | undefined, requests: PublishRequest[]): Promise<PublishOutcome[]> {
    if (requests.some((r) => r.item?.id === this.failing)) throw new Error('the store is failing');
    return super.publishMany(actor, node, requests);
  }
}

/** A publisher of database `name` to `service` (as the component), with its state in `state`. */
const publisherOf = (couch: CouchServer, name: string, service: PubsubService, state: ReplicationState, onPublish: (node: string, id: string) => void, more: Partial<AjatusPublisherOptions> = {}): AjatusPublisher =>
  new AjatusPublisher({
    service,
    actor: ACTOR,
    content: nano(couch.url).use<unknown>(name),
    contentDbName: name,
    state,
    settings: new AppSettings(nano(couch.url).use('app'), silentLogger),
    profile: PROFILES.ajatus as Profile,
    codec: jsonCodec,
    inlineAttachmentMax: 64 * 1024,
    log: silentLogger,
    onPublish,
    ...more,
  });

describe('pipelined publishing (runPipelined)', () => {
  it('keeps the phases of one document and the document order on one node, bounds what is in flight, skips what had not started after a throw', async () => {
    const events: string[] = [];
    let inFlight = 0;
    let most = 0;
    const step = (job: number, node: string, fail = false): PipelineStep => ({
      node,
      async run() {
        inFlight++;
        most = Math.max(most, inFlight);
        events.push(`${job}@${node}`);
        await new Promise((r) => setTimeout(r, (job * 7) % 5)); // settle out of order
        inFlight--;
        if (fail) throw new Error(`job ${job} failed`);
      },
    });
    // Each document: published on two of six nodes, then retracted from a third.
    const jobs = Array.from({ length: 60 }, (_, j) => [[step(j, `n${j % 6}`), step(j, `n${(j + 1) % 6}`)], [step(j, `r${j % 6}`)]]);
    const outcomes = await runPipelined(jobs, 4);
    assert.ok(outcomes.every((o) => o === 'done'));
    assert.ok(most <= 4, `at most 4 in flight (saw ${most})`);
    assert.ok(most > 1, 'more than one in flight');
    for (const node of ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'r0', 'r3']) {
      const order = events.filter((e) => e.endsWith(`@${node}`)).map((e) => Number(e.split('@')[0]));
      assert.deepEqual(order, [...order].sort((a, b) => a - b), `node ${node} in document order`);
    }
    for (let j = 0; j < 60; j++) {
      const retracted = events.indexOf(`${j}@r${j % 6}`);
      assert.ok(events.indexOf(`${j}@n${j % 6}`) < retracted && events.indexOf(`${j}@n${(j + 1) % 6}`) < retracted, `document ${j}: retraction after its publications`);
    }

    const stopped = await runPipelined([[[{ node: 'a', run: async () => 'stop' }], [step(1, 'b')]], [[step(2, 'a', true)]], [[step(3, 'a')]]], 1);
    assert.equal(stopped[0], 'stopped', "a step resolving 'stop' ends its document");
    assert.equal(typeof stopped[1], 'object', 'a throw is its document\'s outcome');
    assert.equal(stopped[2], 'skipped', 'a step not started when another failed is skipped');
  });
});

describe('batched Ajatus source on a real pouchdb-server', { timeout: 120_000 }, () => {
  let couch: CouchServer;
  before(async () => {
    couch = await startCouch();
    await couch.createDbs(DB);
  });
  after(async () => couch?.destroy());

  it('_bulk_get reads the leaves of a batch with their histories: conflicts and a deletion of one document; a revision it cannot read leaves the document to the caller', async () => {
    const db = nano(couch.url).use<unknown>(DB);
    const docs = [
      { _id: 'c', _rev: '1-a', n: 1, _revisions: { start: 1, ids: ['a'] } },
      { _id: 'c', _rev: '2-b', n: 2, _revisions: { start: 2, ids: ['b', 'a'] } },
      { _id: 'c', _rev: '2-c', n: 3, _revisions: { start: 2, ids: ['c', 'a'] } },
      { _id: 'c', _rev: '3-d', _deleted: true, _revisions: { start: 3, ids: ['d', 'c', 'a'] } },
    ];
    await couch.request('POST', `${DB}/_bulk_docs`, { docs, new_edits: false });
    const change = (await changes(couch)).find((c) => c.id === 'c') as Change;
    assert.deepEqual([...change.revs].sort(), ['2-b', '3-d'], 'the feed names every leaf');
    const read = await bulkGetRevisions(db, [change, { id: 'gone', revs: ['1-x'] }], false);
    const leaves = read.get('c') ?? [];
    assert.deepEqual(leaves.map((d) => d._rev).sort(), ['2-b', '3-d']);
    assert.deepEqual(leaves.find((d) => d._rev === '3-d')?._revisions, { start: 3, ids: ['d', 'c', 'a'] });
    assert.equal(leaves.find((d) => d._rev === '3-d')?._deleted, true);
    assert.equal(read.has('gone'), false, 'a revision _bulk_get cannot read: not in the result');
  });

  it('a batch: one state write, every document on its nodes in feed order; the same batch again touches neither CouchDB nor the state', async () => {
    await couch.createDbs('batch');
    const docs = Array.from({ length: 120 }, (_, i) => note(`n-${String(i).padStart(3, '0')}`, i % 4 === 0 ? ['one', 'two'] : ['one']));
    await couch.request('POST', 'batch/_bulk_docs', { docs });
    const { json } = await couch.request('GET', 'batch/_changes?style=all_docs');
    const batch = (json.results as ChangesRow[]).map(changeOf);
    const store = new MemoryStore();
    const space = counting(store.state('replication'));
    const state = new ReplicationState(space.space);
    const service = new PubsubService({ store, mayCreateNodes: () => true, notifier: () => {} });
    const published: Array<[string, string]> = [];
    const publisher = publisherOf(couch, 'batch', service, state, (node, id) => void published.push([node, id]));
    await publisher.handle(batch);
    assert.equal(space.writes(), 1, 'the state of the whole batch in one store write');
    const ids = batch.map((c) => c.id);
    assert.deepEqual(published.filter(([n]) => n === '/tags/one').map(([, id]) => id), ids, 'node /tags/one got every document, in feed order');
    assert.deepEqual(published.filter(([n]) => n === '/tags/two').map(([, id]) => id), ids.filter((id) => Number(id.slice(2)) % 4 === 0));
    assert.equal((await service.getItems(ACTOR, '/tags/one')).length, 120);

    // A replayed batch (a restart before its checkpoint was saved): known, skipped without CouchDB.
    await couch.stop();
    try {
      await publisher.handle(batch);
    } finally {
      await couch.start();
    }
    assert.equal(published.length, 150, 'nothing published again');
    assert.equal(space.writes(), 1, 'nothing written again');
  });

  it('a batch with more attachment bytes than a slice: read and published slice by slice, in feed order, every byte there, one state write', async () => {
    await couch.createDbs('slices');
    const att = (i: number): string => Buffer.alloc(30_000, `attachment ${i} `).toString('base64');
    const docs = Array.from({ length: 8 }, (_, i) => ({ ...note(`s-${i}`, ['one']), ...(i % 4 === 3 ? {} : { _attachments: { 'a.bin': { content_type: 'application/octet-stream', data: att(i) } } }) }));
    await couch.request('POST', 'slices/_bulk_docs', { docs });
    const batch = ((await couch.request('GET', 'slices/_changes?style=all_docs')).json.results as ChangesRow[]).map(changeOf);
    // The content database as the publisher sees it, counting the documents of each _bulk_get with bodies.
    const server = nano(couch.url);
    const relax = server.relax.bind(server);
    const withBodies: number[] = [];
    server.relax = ((opts: { path?: string; qs?: { attachments?: boolean }; body?: Buffer }) => {
      // The body is JSON in a Buffer (src/util/json-body.ts).
      if (opts.path === '_bulk_get' && opts.qs?.attachments) withBodies.push((JSON.parse(String(opts.body)) as { docs: unknown[] }).docs.length);
      return relax(opts as never);
    }) as typeof server.relax;
    const store = new MemoryStore();
    const space = counting(store.state('replication'));
    const state = new ReplicationState(space.space);
    const service = new PubsubService({ store, mayCreateNodes: () => true, notifier: () => {} });
    const published: string[] = [];
    const publisher = publisherOf(couch, 'slices', service, state, (_node, id) => void published.push(id), { content: server.use<unknown>('slices'), sliceBytes: 70_000 });
    await publisher.handle(batch);
    assert.ok(withBodies.length >= 3 && withBodies.every((n) => n >= 1 && n <= 2), `bodies read at most 70 000 bytes at a time: ${JSON.stringify(withBodies)}`);
    assert.deepEqual(published, batch.map((c) => c.id), 'every document, in feed order');
    assert.equal(space.writes(), 1, 'the state of the whole batch in one store write');
    const items = await service.getItems(ACTOR, '/tags/one');
    for (const [i, doc] of docs.entries()) {
      const payload = items.find((it) => it.id === doc._id)?.payload ?? '';
      if (i % 4 !== 3) assert.ok(payload.includes(att(i)), `${doc._id} carries its attachment`);
    }
  });

  it('documents a partner sent, noted by the sink as it wrote them, are recorded without reading CouchDB; one edited here since is read and published', async () => {
    await couch.createDbs('imported');
    const profile = PROFILES.ajatus as Profile;
    const imports = new ImportNotes(profile);
    const store = new MemoryStore();
    const state = new ReplicationState(store.state('replication'));
    const docs = Array.from({ length: 10 }, (_, i) => ({ ...note(`i-${i}`, ['one']), _rev: `1-${String(i).repeat(32)}`, _revisions: { start: 1, ids: [String(i).repeat(32)] } }) as unknown as CouchDoc);
    const contact = { _id: 'i-contact', _rev: `1-${'c'.repeat(32)}`, _revisions: { start: 1, ids: ['c'.repeat(32)] }, value: { _type: 'contact', jid: { val: 'carol@gamma.test' } } } as unknown as CouchDoc;
    // As the sink does: remember the revisions as imported, note them, write them.
    for (const doc of [...docs, contact]) {
      await state.markRevs(doc._id, [doc._rev], 'i');
      imports.note([doc]);
    }
    await couch.request('POST', 'imported/_bulk_docs', { docs: [...docs, contact], new_edits: false });
    const local = (await couch.request('GET', 'imported/i-9')).json;
    await couch.request('PUT', 'imported/i-9', { ...local, edited: true });
    const { json } = await couch.request('GET', 'imported/_changes?style=all_docs');
    const batch = (json.results as ChangesRow[]).map(changeOf);
    const service = new PubsubService({ store, mayCreateNodes: () => true, notifier: () => {} });
    const published: string[] = [];
    const contacts: string[] = [];
    const publisher = publisherOf(couch, 'imported', service, state, (_n, id) => void published.push(id), { imports, onContact: (doc) => void contacts.push(doc._id) });
    await couch.stop();
    try {
      await publisher.handle(batch.filter((c) => c.id !== 'i-9'));
    } finally {
      await couch.start();
    }
    assert.deepEqual(published, [], 'imported documents are not published back');
    assert.deepEqual(await state.nodesOf('i-3'), ['/tags/one'], 'where an imported document is, recorded (a later local deletion goes there)');
    assert.deepEqual(contacts, ['i-contact'], 'an imported contact is seen (partners)');
    await publisher.handle(batch.filter((c) => c.id === 'i-9'));
    assert.deepEqual(published, ['i-9'], 'the local edit of an imported document is read and published');
  });

  it('the changes source tells readAhead of every batch before handing it over (the first too) and reads the next while one is handled; batches are still handed over in order, one at a time', async () => {
    await couch.createDbs('ahead');
    await couch.request('POST', 'ahead/_bulk_docs', { docs: Array.from({ length: 30 }, (_, i) => note(`a-${String(i).padStart(2, '0')}`, ['one'])) });
    const toldAhead: string[][] = [];
    let told: () => void = () => {};
    const source = new CouchChangesSource({
      db: nano(couch.url).use<unknown>('ahead'),
      feed: 'couchdb:ahead',
      log: silentLogger,
      batchSize: 10,
      readAhead: (changes) => {
        toldAhead.push(changes.map((c) => c.id));
        told();
      },
    });
    const handed: string[][] = [];
    /** Per batch handed over: whether it had been told before (its documents could be read meanwhile). */
    const toldFirst: boolean[] = [];
    let handling = false;
    await new Promise<void>((resolve) => {
      void source.start(undefined, async ({ changes }) => {
        assert.equal(handling, false, 'one batch at a time');
        handling = true;
        handed.push(changes.map((c) => c.id));
        toldFirst.push(isDeepStrictEqual(toldAhead[handed.length - 1], handed.at(-1)));
        // The next batch is read (and told) while this one is being handled.
        if (handed.length < 3 && toldFirst.at(-1)) await new Promise<void>((r) => (toldAhead.length > handed.length ? r() : (told = r)));
        handling = false;
        if (handed.length === 3) resolve();
      });
    });
    await source.stop();
    const feedOrder = ((await couch.request('GET', 'ahead/_changes')).json.results as ChangesRow[]).map((r) => r.id);
    assert.deepEqual(toldFirst, [true, true, true], 'each batch told before it is handed over (the first too)');
    assert.deepEqual(handed.flat(), feedOrder, 'every change handed over once, in feed order');
    assert.deepEqual(toldAhead.slice(0, 3), handed.slice(0, 3), 'each batch told, the next one while this one was handled');
  });

  it('the changes source asks for the next page only once readAhead has read the documents of the one before (a longpoll beside that read slowed it)', async () => {
    await couch.createDbs('ahead-order');
    await couch.request('POST', 'ahead-order/_bulk_docs', { docs: Array.from({ length: 30 }, (_, i) => note(`o-${String(i).padStart(2, '0')}`, ['one'])) });
    const db = nano(couch.url).use<unknown>('ahead-order');
    /** In order: 'ask' for each `_changes` request, 'read <first id>' when a page's read-ahead settled. */
    const events: string[] = [];
    const relax = db.server.relax.bind(db.server);
    db.server.relax = ((opts: { path?: string }) => {
      if (opts.path === '_changes') events.push('ask');
      return relax(opts as never);
    }) as typeof db.server.relax;
    const source = new CouchChangesSource({
      db,
      feed: 'couchdb:ahead-order',
      log: silentLogger,
      batchSize: 10,
      // The documents' read, as the publisher's prefetch: takes a while, settles (never rejects).
      readAhead: (changes) => new Promise<void>((resolve) => setTimeout(() => {
        events.push(`read ${changes[0]?.id}`);
        resolve();
      }, 40)),
    });
    const handed: string[] = [];
    /** The first id of each page handed over: a longpoll may answer with fewer than `limit` rows (pouchdb-server answered 7 once), so pages are named by what came. */
    const heads: string[] = [];
    await new Promise<void>((resolve) => {
      void source.start(undefined, async ({ changes }) => {
        heads.push(changes[0]?.id ?? '');
        handed.push(...changes.map((c) => c.id));
        if (handed.length === 30) resolve();
      });
    });
    await source.stop();
    assert.equal(handed.length, 30, 'every change handed over');
    assert.equal(heads[0], 'o-00');
    assert.ok(heads.length >= 3, `30 changes in pages of at most 10: ${heads.join(' ')}`);
    assert.deepEqual(events.slice(0, 5), ['ask', `read ${heads[0]}`, 'ask', `read ${heads[1]}`, 'ask'], 'each next page asked for after the read of the one before');
  });

  it('read ahead does not wait for the state store: a new revision is read at once, what memory knows as published or noted as imported is not read; handle() then uses that read', async () => {
    await couch.createDbs('eager');
    await couch.request('POST', 'eager/_bulk_docs', { docs: [note('mine', ['one']), note('theirs', ['one']), note('new', ['one'])] });
    const batch = ((await couch.request('GET', 'eager/_changes?style=all_docs')).json.results as ChangesRow[]).map(changeOf);
    const store = new MemoryStore();
    const real = store.state('replication');
    // A store whose reads wait until released (a busy disk): what is cached still answers.
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    const slow: StateSpace = { get: (k) => real.get(k), getMany: async (k) => (await released, real.getMany(k)), range: (p, o) => real.range(p, o), batch: (ops) => real.batch(ops), swap: (k, e, n) => real.swap(k, e, n) };
    const state = new ReplicationState(slow);
    const rev = (id: string): string => (batch.find((c) => c.id === id) as Change).revs[0] as string;
    await state.markRevs('mine', [rev('mine')], 'p'); // published here (cached as it is written)
    await state.markRevs('theirs', [rev('theirs')], 'i'); // imported, as the sink records and notes it
    const imports = new ImportNotes(PROFILES.ajatus as Profile);
    imports.note([(await couch.request('GET', 'eager/theirs')).json as CouchDoc]);
    // The real server answers; the requests it gets are listed.
    const content = nano(couch.url).use<unknown>('eager');
    const asked: string[][] = [];
    const relax = content.server.relax.bind(content.server);
    content.server.relax = ((o: { path?: string; body?: Buffer }) => {
      // The body is JSON in a Buffer (src/util/json-body.ts).
      if (o.path === '_bulk_get') asked.push(((JSON.parse(String(o.body)) as { docs: Array<{ id: string }> }).docs ?? []).map((d) => d.id));
      return relax(o as never);
    }) as typeof content.server.relax;
    const service = new PubsubService({ store, mayCreateNodes: () => true, notifier: () => {} });
    const published: string[] = [];
    const publisher = publisherOf(couch, 'eager', service, state, (_n, id) => void published.push(id), { imports, content });
    publisher.prefetch(batch);
    assert.deepEqual(asked, [['new']], 'the new revision is read at once, while the store has not answered; the known ones are not read');
    const handled = publisher.handle(batch);
    release();
    await handled;
    assert.deepEqual(published, ['new'], 'only the new revision is published');
    assert.deepEqual(asked, [['new']], 'handle() used the read ahead: no second _bulk_get');
  });

  it('a document whose large attachment cannot be uploaded waits in the state while the rest of its batch is published; the retries publish it once the upload works, after a restart too; a newer version never goes before; a refusal for good is not tried again', async () => {
    await couch.createDbs('uploads');
    const withBig = (id: string, fill = 'large attachment '): Record<string, unknown> => ({ ...note(id, ['one']), _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: Buffer.alloc(100_000, fill).toString('base64') } } });
    await couch.request('POST', 'uploads/_bulk_docs', { docs: [note('u-small', ['one']), withBig('u-big'), note('u-after', ['one'])] });
    const store = new MemoryStore();
    const state = new ReplicationState(store.state('replication'));
    const service = new PubsubService({ store, mayCreateNodes: () => true, notifier: () => {} });
    let answer: 'none' | 'yes' | 'too large' = 'none';
    let tries = 0;
    // The server's upload service (XEP-0363) as HttpUploader reaches it: silent, answering, or refusing for good.
    const uploader = {
      async upload(filename: string): Promise<string> {
        tries++;
        if (answer === 'none') throw new IqError('remote-server-timeout', undefined, 'no answer within 15000 ms', 'upload.alpha.test', 'wait');
        if (answer === 'too large') throw new UploadRefused('upload service upload.alpha.test refused a slot: not-acceptable (file too large)');
        return `http://upload.alpha.test/${filename}`;
      },
    } as unknown as HttpUploader;
    const published: string[] = [];
    const log = captureLog();
    const site = (): { publisher: AjatusPublisher; retries: PublishRetries<Change> } => {
      const retries = new PublishRetries<Change>({ state, feed: 'retry:uploads', log, firstMs: 20, maxMs: 80 });
      const publisher = publisherOf(couch, 'uploads', service, state, () => undefined, { uploader, retries, log, onPublish: (_node, id, rev) => void published.push(`${id} ${rev}`) });
      return { publisher, retries };
    };
    const waiting = async (): Promise<Array<[string, RetryRecord<Change>]>> => state.records<RetryRecord<Change>>(RETRY_KIND);
    const revOf = async (id: string): Promise<string> => String(((await couch.request('GET', `uploads/${id}`)).json as { _rev: string })._rev);
    const feedOf = async (id: string): Promise<Change[]> => (await changes(couch, 'uploads')).filter((c) => c.id === id);

    let { publisher, retries } = site();
    await publisher.handle(await changes(couch, 'uploads'));
    const rev1 = await revOf('u-big');
    assert.deepEqual(published.map((p) => p.split(' ')[0]), ['u-small', 'u-after'], 'the rest of the batch was published');
    assert.deepEqual((await waiting()).map(([id, r]) => [id, r.tries, r.item.revs]), [['u-big', 1, [rev1]]], 'the document waits in the state, with the change that failed');
    assert.match(log.lines.find((l) => l.msg === 'document not published; will try again')?.reason as string, /could not be uploaded.*no answer/);

    // Hermod restarts while the upload service is still silent: the wait is read again and tried at once, then again after each wait.
    ({ publisher, retries } = site());
    await retries.start(undefined, ({ changes: c }) => publisher.retry(c));
    try {
      await until(async () => ((await waiting())[0]?.[1].tries ?? 0) >= 3, 'three more failed attempts');
      assert.ok(!published.includes(`u-big ${rev1}`));
      answer = 'yes';
      await until(async () => published.includes(`u-big ${rev1}`), 'u-big published by the retries');
      assert.deepEqual(await waiting(), [], 'no longer waiting');
      const item = (await service.getItems(ACTOR, '/tags/one')).find((i) => i.id === 'u-big');
      assert.match(item?.payload ?? '', /http:\/\/upload\.alpha\.test\//, 'published with the reference to the upload');
      assert.ok(log.lines.some((l) => l.msg === 'document published after failed attempts' && l.doc === 'u-big'));

      // Edited with other large bytes while the service is silent again: that version waits. Edited
      // once more (no attachment) before the feed hands that over: the waiting version is older than
      // the document, so the retries drop it even once uploads work, and the feed publishes the newest.
      answer = 'none';
      await couch.request('PUT', 'uploads/u-big', { ...withBig('u-big', 'other bytes '), _rev: rev1 });
      const rev2 = await revOf('u-big');
      await publisher.handle(await feedOf('u-big'));
      assert.deepEqual((await waiting()).map(([id, r]) => [id, r.item.revs]), [['u-big', [rev2]]], 'the edit waits');
      await couch.request('PUT', 'uploads/u-big', { ...note('u-big', ['one']), _rev: rev2 });
      const rev3 = await revOf('u-big');
      answer = 'yes';
      await until(async () => (await waiting()).length === 0, 'the older version no longer waiting');
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(!published.includes(`u-big ${rev2}`), 'the older version was not published');
      await publisher.handle(await feedOf('u-big'));
      assert.ok(published.includes(`u-big ${rev3}`), 'the newest published from the feed');

      // A refusal that decides (file too large) is logged and not tried again.
      answer = 'too large';
      await couch.request('PUT', 'uploads/u-big', { ...withBig('u-big', 'far too large '), _rev: rev3 });
      const attempts = tries;
      await publisher.handle(await feedOf('u-big'));
      assert.equal(tries, attempts + 1);
      assert.deepEqual(await waiting(), [], 'not waiting');
      assert.ok(log.lines.some((l) => l.msg === 'document not published: the upload service refused a large attachment' && l.doc === 'u-big'));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(tries, attempts + 1, 'no upload tried again');
    } finally {
      await retries.stop();
    }
  });

  it('a tag whose settings could not be applied when its node was created (the store failing) gets them at its next publication', async () => {
    await couch.createDbs('access');
    await couch.request('POST', 'access/_bulk_docs', { docs: [note('w-1', ['secret'])] });
    const { json } = await couch.request('GET', 'access/_changes?style=all_docs');
    const batch = (json.results as ChangesRow[]).map(changeOf);
    const store = new MemoryStore();
    let failures = 1;
    class FlakyAffiliations extends PubsubService {
      override setAffiliations(...args: Parameters<PubsubService['setAffiliations']>): ReturnType<PubsubService['setAffiliations']> {
        return failures-- > 0 ? Promise.reject(new Error('the store is failing')) : super.setAffiliations(...args);
      }
    }
    const service = new FlakyAffiliations({ store, mayCreateNodes: () => true, notifier: () => {} });
    const settings = { tag: () => ({ accessModel: 'whitelist' as const, whitelist: ['pubsub.b.test'] }) } as unknown as AppSettings;
    const publisher = publisherOf(couch, 'access', service, new ReplicationState(store.state('replication')), () => {}, { settings });
    await assert.rejects(publisher.handle(batch), /the store is failing/, 'the batch is handed over again');
    await publisher.handle(batch);
    assert.equal((await service.getAffiliations(ACTOR, '/tags/secret')).get('pubsub.b.test'), 'member', 'the whitelist applied at the next publication');
    assert.deepEqual((await service.getItems(ACTOR, '/tags/secret')).map((i) => i.id), ['w-1']);
  });

  it('a publish failing mid-batch: the batch rejects, the documents that completed (on the other node) are recorded, the retry publishes only the rest', async () => {
    await couch.createDbs('flaky');
    // f-00..f-29 on node one, f-30..f-59 on node two: a node's entries of a batch are one write.
    await couch.request('POST', 'flaky/_bulk_docs', { docs: Array.from({ length: 60 }, (_, i) => note(`f-${String(i).padStart(2, '0')}`, [i < 30 ? 'one' : 'two'])) });
    const { json } = await couch.request('GET', 'flaky/_changes?style=all_docs');
    const batch = (json.results as ChangesRow[]).map(changeOf);
    const store = new MemoryStore();
    const state = new ReplicationState(store.state('replication'));
    const service = new FlakyService({ store, mayCreateNodes: () => true, notifier: () => {} });
    service.failing = 'f-30';
    const published: string[] = [];
    const publisher = publisherOf(couch, 'flaky', service, state, (_node, id) => void published.push(id));
    await assert.rejects(publisher.handle(batch), /the store is failing/);
    const first = [...published];
    assert.ok(first.includes('f-00') && first.includes('f-29') && !first.includes('f-30') && !first.includes('f-59'), 'the other node\'s were published, none of the failing write\'s');
    service.failing = undefined;
    await publisher.handle(batch);
    const again = published.slice(first.length);
    assert.deepEqual(again.filter((id) => first.includes(id)), [], 'nothing published twice');
    assert.deepEqual([...first, ...again].sort(), batch.map((c) => c.id).sort(), 'every document published once in all');
  });
});
