// The replication stage (src/replication/transforms.ts) between the partner manager and the
// sinks: a leaf the local database refuses for itself (RefusedWrite) goes to the quarantine and
// counts as handled — so the node's history position moves past it instead of holding there for
// the rest of the run — while a write that may pass (the database down) rejects, is not
// quarantined, and is applied again by the partner manager. Same for transform outputs. The
// partner side with real Hermods and a CouchDB validate_doc_update: test/e2e/ajatus-replication.test.ts.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Element } from 'ltx';
import { ReplicationState } from '../../src/replication/state.ts';
import { Transforms, type TransformStage } from '../../src/replication/transforms.ts';
import { RefusedWrite, type PartnerSink } from '../../src/sinks/sink.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { Quarantine, QUARANTINE_SPACE } from '../../src/transform/quarantine.ts';
import { TransformError } from '../../src/transform/xslt.ts';
import { couchPartnerSink, nodeHasItem, nodeOffersItem } from '../../src/replication/ajatus.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import type { PubsubClient } from '../../src/xmpp/pubsub-client.ts';
import { PROFILES, type Profile } from '../../src/replication/profile.ts';
import { buildEntry, CODECS, type CouchDoc } from '../../src/codecs/couch-doc.ts';
import type { CouchSink } from '../../src/sinks/couchdb.ts';
import { captureLog } from './capture-log.ts';


const SERVICE = 'pubsub.alpha.test';
const PARTNER = 'alice@alpha.test';
const leaf = (node: string, id: string, version = 1) => ({ service: SERVICE, node, partner: PARTNER, item: new Element('item', { id }).cnode(new Element('note', { id, version: String(version) }).c('title').t(`Title ${id}`).up()).up() });

/** The database as a partner's sink sees it: `refused` ids refused for themselves, `down` ids failing as an outage does. */
function database(): { sink: PartnerSink; batching: PartnerSink; refused: Set<string>; down: Set<string>; written: string[]; retracted: string[] } {
  const refused = new Set<string>();
  const down = new Set<string>();
  const written: string[] = [];
  const retracted: string[] = [];
  const sink: PartnerSink = {
    writeItem: async (_service, _node, item) => {
      const id = String(item.attrs.id);
      const version = item.getChild('note')?.attrs.version as string;
      if (refused.has(id)) throw new RefusedWrite(`CouchDB refused ${id}: forbidden (validate_doc_update)`);
      if (down.has(id)) throw new Error(`CouchDB at 127.0.0.1:1 did not answer (writing ${id})`);
      written.push(`${id} v${version}`);
      return true;
    },
    retract: async (_service, _node, itemId) => void retracted.push(itemId),
  };
  // A sink that batches: writeItems collects concurrent writes (as couchPartnerSink's does).
  const batching: PartnerSink = { ...sink, writeItems: () => Promise.reject(new Error('the stage hands leaves over one by one to a batching sink')) };
  return { sink, batching, refused, down, written, retracted };
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function stageWith(native: PartnerSink, specFor: (node: string) => { stylesheet: string; params: Record<string, string> } | undefined = () => undefined) {
  const store = new MemoryStore();
  const log = captureLog();
  const dir = mkdtempSync(path.join(tmpdir(), 'hermod-leaf-quarantine-'));
  dirs.push(dir);
  const quarantine = new Quarantine(store.state(QUARANTINE_SPACE));
  const transforms = new Transforms({ dir, quarantine, log, timeoutMs: 10_000, maxOutput: 100_000, pollMs: 50 });
  const stage: TransformStage = transforms.stage('ajatus', { specFor: (_partner, node) => specFor(node), native, state: new ReplicationState(store.state('replication')), onStylesheetChange: () => undefined });
  return { transforms, stage, quarantine, log, dir };
}

describe('leaves the local database refuses go to the quarantine; writes that may pass are tried again', () => {
  for (const kind of ['one at a time', 'batching'] as const) {
    it(`a refused leaf is quarantined and handled, the others written; an outage rejects and quarantines nothing (${kind} sink)`, async () => {
      const db = database();
      const { transforms, stage, quarantine, log } = await stageWith(kind === 'batching' ? db.batching : db.sink);
      try {
        db.refused.add('bad');
        assert.deepEqual(await stage.writeItems([leaf('/tags/a', 'g1'), leaf('/tags/a', 'bad'), leaf('/tags/a', 'g2')]), [true, false, true], 'handled: the refused one as not written');
        assert.deepEqual(db.written, ['g1 v1', 'g2 v1']);
        const [entry, ...more] = await quarantine.list();
        assert.equal(more.length, 0);
        assert.equal(entry?.itemId, 'bad');
        assert.equal(entry?.node, '/tags/a');
        assert.equal(entry?.partner, PARTNER);
        assert.match(entry?.reason ?? '', /validate_doc_update/);
        assert.match(entry?.payload ?? '', /<note id="bad" version="1">/, 'the payload as received');
        assert.ok(log.lines.some((l) => l.level === 'warn' && l.msg === 'leaf quarantined' && l.item === 'bad'));
        // A live notification of it again (a replay): one entry, attempts counted.
        assert.equal(await stage.writeItem(SERVICE, '/tags/a', leaf('/tags/a', 'bad').item, PARTNER), false);
        assert.equal((await quarantine.list())[0]?.attempts, 2);

        // The database down: rejects (the partner manager applies it again), nothing quarantined.
        db.down.add('later');
        await assert.rejects(stage.writeItems([leaf('/tags/a', 'g3'), leaf('/tags/a', 'later')]), /did not answer/);
        await assert.rejects(stage.writeItem(SERVICE, '/tags/a', leaf('/tags/a', 'later').item, PARTNER), /did not answer/);
        assert.deepEqual((await quarantine.list()).map((e) => e.itemId), ['bad']);
        assert.ok(db.written.includes('g3 v1'), 'the rest of the batch is written');
      } finally {
        await transforms.stop();
      }
    });
  }

  it('`hermod quarantine retry` writes it once the database takes it; a newer version written through any node takes the entry out', async () => {
    const db = database();
    const { transforms, stage, quarantine } = await stageWith(db.batching);
    try {
      db.refused.add('bad').add('old');
      await stage.writeItems([leaf('/tags/a', 'bad'), leaf('/tags/a', 'old')]);
      // The same document through another node (one copy: either node may carry it): one entry.
      assert.equal(await stage.writeItem(SERVICE, '/tags/b', leaf('/tags/b', 'old').item, PARTNER), false);
      assert.deepEqual((await quarantine.list()).map((e) => `${e.itemId} ${e.attempts}`).sort(), ['bad 1', 'old 2']);
      // Its next edit is taken (through the first node): the refused older version is superseded.
      db.refused.delete('old');
      assert.equal(await stage.writeItem(SERVICE, '/tags/a', leaf('/tags/a', 'old', 2).item, PARTNER), true);
      assert.deepEqual((await quarantine.list()).map((e) => e.itemId), ['bad']);

      // A retry listed before a newer version replaced the entry does not run the older one.
      const stale = (await quarantine.list())[0];
      assert.ok(stale);
      assert.equal(await quarantine.retry(stale.id), true);
      assert.equal(await stage.writeItem(SERVICE, '/tags/a', leaf('/tags/a', 'bad', 2).item, PARTNER), false, 'v2 refused too: it replaces the entry (and its retry mark)');
      await stage.retry(stale);
      const [replaced] = await quarantine.list();
      assert.match(replaced?.payload ?? '', /version="2"/, 'the entry holds v2, not the v1 of the stale retry');
      assert.ok(!db.written.includes('bad v1'));

      // The cause fixed (the validation function changed), the entry retried by the operator.
      db.refused.delete('bad');
      transforms.start();
      const id = (await quarantine.list())[0]?.id as string;
      assert.equal(await quarantine.retry(id), true);
      for (let i = 0; i < 100 && !db.written.includes('bad v2'); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(db.written.includes('bad v2'), 'written from the quarantine');
      assert.deepEqual(await quarantine.list(), []);
      assert.deepEqual(await quarantine.pendingRetries(), []);
    } finally {
      await transforms.stop();
    }
  });

  it('with a stylesheet: an output the database refuses is quarantined; an output write that may pass rejects and is not quarantined', async () => {
    const db = database();
    const { transforms, stage, quarantine, dir } = await stageWith(db.sink, (node) => (node === '/tags/x' ? { stylesheet: 'note2out.xsl', params: {} } : undefined));
    writeFileSync(
      path.join(dir, 'note2out.xsl'),
      `<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/note"><out id="{@id}"><xsl:value-of select="title"/></out></xsl:template>
</xsl:stylesheet>`,
    );
    const outputs: string[] = [];
    const removed: string[] = [];
    transforms.register({
      key: 'out',
      format: '<out/>',
      accepts: (root) => root.name === 'out',
      write: async (root) => {
        const id = String(root.attrs.id);
        if (id.startsWith('x-malformed')) throw new TransformError(`the <out/> output of ${id} has no title`);
        if (db.refused.has(id)) throw new RefusedWrite(`the target refused ${id}`);
        if (db.down.has(id)) throw new Error(`the target did not answer (${id})`);
        outputs.push(id);
        return { ref: id, written: true };
      },
      // A removal that takes a while (a CouchDB round trip).
      remove: async (ref) => {
        await new Promise((r) => setTimeout(r, 100));
        removed.push(ref);
      },
    });
    try {
      db.refused.add('x-bad');
      db.down.add('x-later');
      const x = (id: string) => leaf('/tags/x', id);
      await assert.rejects(stage.writeItems([x('x-good'), x('x-bad'), x('x-later')]), /did not answer/);
      assert.deepEqual(outputs, ['x-good']);
      assert.deepEqual((await quarantine.list()).map((e) => `${e.itemId}: ${e.reason}`), ['x-bad: the target refused x-bad']);
      // Back: applied again (as the partner manager does), written, nothing quarantined.
      db.down.delete('x-later');
      assert.deepEqual(await stage.writeItems([x('x-later')]), [true]);
      assert.deepEqual(outputs, ['x-good', 'x-later']);
      assert.equal((await quarantine.list()).length, 1);

      // An output the target cannot write (the stylesheet's fault) is quarantined, not tried again and again.
      assert.deepEqual(await stage.writeItems([x('x-malformed')]), [false]);
      assert.ok((await quarantine.list()).some((e) => e.itemId === 'x-malformed' && /has no title/.test(e.reason)));

      // A retraction being applied, and a newer version of the item refused right after it: the
      // retraction drops what was quarantined before it, never the newer entry.
      const retracted = stage.retract(SERVICE, '/tags/x', 'x-good', () => false, PARTNER);
      db.refused.add('x-good');
      assert.equal(await stage.writeItem(SERVICE, '/tags/x', x('x-good').item, PARTNER), false);
      await retracted;
      assert.deepEqual(removed, ['x-good']);
      assert.ok((await quarantine.list()).some((e) => e.itemId === 'x-good'), 'the version refused after the retraction stays quarantined');
      await stage.retract(SERVICE, '/tags/x', 'x-malformed', () => false, PARTNER);
      assert.ok(!(await quarantine.list()).some((e) => e.itemId === 'x-malformed'), 'retracted from its node: its quarantined leaf goes');
    } finally {
      await transforms.stop();
    }
  });

  it('a transform cut short by Hermod stopping (not the stylesheet\'s fault) rejects and quarantines nothing: the leaf is applied again after the restart', async () => {
    const db = database();
    const { transforms, stage, quarantine, dir } = await stageWith(db.sink, () => ({ stylesheet: 'slow.xsl', params: {} }));
    // Counts to a large number: seconds of work, well within the 10 s limit.
    writeFileSync(
      path.join(dir, 'slow.xsl'),
      `<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/note"><note id="{@id}" n="{count((1 to 100000000)[. mod 7 = 0])}"/></xsl:template>
</xsl:stylesheet>`,
    );
    let stopped = false;
    try {
      const writing = stage.writeItems([leaf('/tags/s', 's-1')]);
      const failed = assert.rejects(writing, /shutting down/);
      await new Promise((r) => setTimeout(r, 500)); // saxon-js loading, or the transform running: either way cut short
      await transforms.stop();
      stopped = true;
      await failed;
      assert.deepEqual(await quarantine.list(), [], 'not quarantined');
      assert.deepEqual(db.written, []);
    } finally {
      if (!stopped) await transforms.stop();
    }
  });

  it('a retraction drops the item\'s quarantined leaf when the sink says it is withdrawn, in order with the item\'s writes; kept when not, or when that is not known', async () => {
    const db = database();
    const asked: string[] = [];
    /** Per item: what the sink's `withdrawn` answers ('unknown': rejects, as a node that did not answer). */
    const answer = new Map<string, boolean | 'unknown'>();
    const sink: PartnerSink = {
      ...db.batching,
      withdrawn: async ({ itemId, payload }) => {
        asked.push(`${itemId} ${/version="(\d+)"/.exec(payload)?.[1]}`);
        const a = answer.get(itemId) ?? false;
        if (a === 'unknown') throw new Error('pubsub.alpha.test did not answer');
        return a;
      },
    };
    const { transforms, stage, quarantine, log } = await stageWith(sink);
    try {
      // Nothing quarantined: a retraction asks nothing.
      await stage.retract(SERVICE, '/tags/a', 'never-refused', () => false, PARTNER);
      assert.equal(asked.length, 0);
      assert.deepEqual(db.retracted, ['never-refused']);

      db.refused.add('gone').add('offered').add('unknown');
      await stage.writeItems([leaf('/tags/a', 'gone'), leaf('/tags/a', 'offered'), leaf('/tags/b', 'unknown')]);
      assert.equal((await quarantine.list()).length, 3);
      answer.set('gone', true).set('offered', false).set('unknown', 'unknown');
      // Retracted from another node than the one it came through: one entry per document.
      await Promise.all([stage.retract(SERVICE, '/tags/b', 'gone', () => true, PARTNER), stage.retract(SERVICE, '/tags/a', 'offered', () => false, PARTNER), stage.retract(SERVICE, '/tags/b', 'unknown', () => false, PARTNER)]);
      assert.deepEqual([...asked].sort(), ['gone 1', 'offered 1', 'unknown 1']);
      assert.deepEqual((await quarantine.list()).map((e) => e.itemId).sort(), ['offered', 'unknown'], 'only the withdrawn leaf dropped');
      const dropped = log.lines.find((l) => l.msg === 'quarantined leaf dropped: its partner withdrew the item');
      assert.equal(dropped?.item, 'gone');
      assert.match(String(dropped?.reason), /validate_doc_update/);

      // A leaf refused after the retraction was called replaces no entry the retraction drops:
      // the retraction's check runs before it, in call order.
      answer.set('offered', true);
      const retracted = stage.retract(SERVICE, '/tags/a', 'offered', () => false, PARTNER);
      assert.equal(await stage.writeItem(SERVICE, '/tags/a', leaf('/tags/a', 'offered', 2).item, PARTNER), false);
      await retracted;
      const [kept] = (await quarantine.list()).filter((e) => e.itemId === 'offered');
      assert.match(kept?.payload ?? '', /version="2"/, 'the version refused after the retraction stays');
      assert.ok(asked.includes('offered 1') && !asked.includes('offered 2'), 'the check saw the version before the retraction');

      // A withdrawn entry marked for retry is dropped too: the retry then writes nothing.
      const unknown = (await quarantine.list()).find((e) => e.itemId === 'unknown');
      assert.ok(unknown);
      assert.equal(await quarantine.retry(unknown.id), true);
      answer.set('unknown', true);
      await stage.retract(SERVICE, '/tags/b', 'unknown', () => false, PARTNER);
      db.refused.delete('unknown');
      await stage.retry(unknown);
      assert.ok(!db.written.some((w) => w.startsWith('unknown')), 'not written: the partner withdrew it');
      assert.deepEqual(await quarantine.pendingRetries(), []);
    } finally {
      await transforms.stop();
    }
  });
});

describe('`hermod quarantine retry` of a leaf the partner may have withdrawn since', () => {
  async function retried(answer: (entry: { itemId: string }) => Promise<boolean>) {
    const db = database();
    const sink: PartnerSink = { ...db.batching, withdrawn: answer };
    const t = await stageWith(sink);
    db.refused.add('n1');
    await t.stage.writeItems([leaf('/tags/a', 'n1')]);
    db.refused.delete('n1');
    const entry = (await t.quarantine.list())[0];
    assert.ok(entry);
    assert.equal(await t.quarantine.retry(entry.id), true);
    return { ...t, db, entry };
  }

  it('withdrawn: dropped, not written', async () => {
    const { transforms, stage, quarantine, db, entry, log } = await retried(async () => true);
    try {
      await stage.retry(entry);
      assert.deepEqual(db.written, []);
      assert.deepEqual(await quarantine.list(), []);
      assert.deepEqual(await quarantine.pendingRetries(), []);
      assert.ok(log.lines.some((l) => l.msg === 'quarantined leaf dropped: its partner withdrew the item' && l.item === 'n1'));
    } finally {
      await transforms.stop();
    }
  });

  it('not withdrawn: written', async () => {
    const { transforms, stage, quarantine, db, entry } = await retried(async () => false);
    try {
      await stage.retry(entry);
      assert.deepEqual(db.written, ['n1 v1']);
      assert.deepEqual(await quarantine.list(), []);
    } finally {
      await transforms.stop();
    }
  });

  it('not known yet (a node did not answer; at start, the partner not added yet): the mark stays and it is tried again later, then written once it is known', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    let known = false;
    const { transforms, stage, quarantine, db, entry, log } = await retried(async () => {
      if (!known) throw new Error('pubsub.alpha.test answered wait/policy-violation');
      return false;
    });
    try {
      await stage.retry(entry);
      assert.deepEqual(db.written, []);
      assert.deepEqual((await quarantine.pendingRetries()).map((e) => e.id), [entry.id], 'still marked for retry');
      assert.ok(log.lines.some((l) => l.msg === 'quarantined leaf retry postponed: it could not be decided now' && /policy-violation/.test(String(l.reason))));
      await stage.retry(entry); // the next tick, before it is due: nothing asked
      known = true;
      await stage.retry(entry);
      assert.deepEqual(db.written, [], 'not before its wait is over');
      t.mock.timers.tick(5_000);
      await stage.retry(entry);
      assert.deepEqual(db.written, ['n1 v1']);
      assert.deepEqual([await quarantine.list(), await quarantine.pendingRetries()], [[], []]);
    } finally {
      await transforms.stop();
    }
  });

  it('never known (the partner removed since): back in the quarantine after ~5 min of attempts, with both reasons, which do not pile up', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    const { transforms, stage, quarantine, db, entry } = await retried(() => Promise.reject(new Error('pubsub.alpha.test answered wait/policy-violation')));
    const attempts = async (): Promise<void> => {
      for (let i = 0; i < 8 && (await quarantine.pendingRetries()).length > 0; i++) {
        await stage.retry((await quarantine.pendingRetries())[0] as typeof entry);
        t.mock.timers.tick(10 * 60_000);
      }
    };
    try {
      await attempts();
      assert.deepEqual(db.written, []);
      const [back] = await quarantine.list();
      assert.match(back?.reason ?? '', /validate_doc_update.*not retried: whether the partner still offers the item is not known: .*policy-violation/);
      assert.equal(back?.attempts, 2, 'one more attempt counted');
      // Retried again and not known again: the reasons do not pile up.
      assert.equal(await quarantine.retry(entry.id), true);
      await attempts();
      assert.equal(((await quarantine.list())[0]?.reason.match(/not retried/g) ?? []).length, 1);
    } finally {
      await transforms.stop();
    }
  });

  for (const [who, service] of [['its partner', SERVICE], ['another partner (the same document)', 'pubsub.c.test']] as const) {
  it(`a retraction of the item by ${who} called while the retry looks reaches the sink first: the retry does not write, the mark stays`, async () => {
    let stage: TransformStage | undefined;
    let retracted: Promise<void> | undefined;
    const t = await retried(async () => {
      // The retraction arrives now (its sink call goes out at once); once.
      retracted ??= stage?.retract(service, '/tags/a', 'n1', () => false, PARTNER);
      return false;
    });
    stage = t.stage;
    try {
      await t.stage.retry(t.entry);
      await retracted;
      assert.deepEqual(t.db.written, [], 'not written after the retraction');
      assert.deepEqual(t.db.retracted, ['n1']);
      assert.deepEqual((await t.quarantine.pendingRetries()).map((e) => e.itemId), ['n1'], 'still marked: the next check decides');
    } finally {
      await t.transforms.stop();
    }
  });
  }
});

describe('Ajatus: which quarantined leaves a retraction withdraws (couchPartnerSink.withdrawn)', () => {
  const profile = PROFILES.ajatus as Profile;
  const note = (id: string, rev: string, deleted = false): CouchDoc => ({ _id: id, _rev: rev, value: { _type: 'note', title: { val: 'T' }, tags: { val: ['a'] }, ...(deleted ? { metadata: { deleted: { val: true } } } : {}) } });
  const payload = (doc: CouchDoc, others: CouchDoc[] = []) => buildEntry(doc, { id: doc._id, title: 'T', updated: '2026-12-02T00:00:00.000Z', author: 'a', tags: ['a'] }, CODECS.json!, others).toString();
  /** The Ajatus sink, with a carrier lookup that says whether any node still `offered` the item (or cannot tell). */
  function sinkAsking(offered: boolean | Error): { sink: PartnerSink; asked: string[] } {
    const asked: string[] = [];
    const lookup = async (service: string, itemId: string, partner: string | undefined): Promise<boolean> => {
      asked.push(`${service} ${itemId} ${partner}`);
      if (offered instanceof Error) throw offered;
      return offered;
    };
    const noDatabase = (): CouchSink => {
      throw new Error('withdrawn reads no database');
    };
    return { sink: couchPartnerSink(noDatabase, profile, captureLog(), { carrier: async () => undefined, offered: lookup }), asked };
  }
  const leafOf = (p: string) => ({ service: SERVICE, node: '/tags/a', itemId: 'd1', partner: PARTNER, payload: p });

  it('a live leaf is withdrawn when its service offers the item on none of its nodes, kept while one does (whatever the local document)', async () => {
    const gone = sinkAsking(false);
    assert.equal(await gone.sink.withdrawn?.(leafOf(payload(note('d1', '2-b')))), true);
    assert.deepEqual(gone.asked, [`${SERVICE} d1 ${PARTNER}`]);
    assert.equal(await sinkAsking(true).sink.withdrawn?.(leafOf(payload(note('d1', '2-b')))), false);
    // A CouchDB tombstone beside a live conflicting leaf: the live one wins (CouchDB's rule), a live leaf.
    assert.equal(await gone.sink.withdrawn?.(leafOf(payload({ _id: 'd1', _rev: '2-b', _deleted: true }, [note('d1', '1-a')]))), true);
  });

  it('a deletion leaf is never withdrawn (written, it leaves the document deleted), and nothing is asked', async () => {
    const s = sinkAsking(false);
    assert.equal(await s.sink.withdrawn?.(leafOf(payload(note('d1', '3-c', true)))), false, 'the Ajatus deleted flag');
    assert.equal(await s.sink.withdrawn?.(leafOf(payload({ _id: 'd1', _rev: '3-c', _deleted: true }))), false, 'a CouchDB tombstone');
    assert.equal(await s.sink.withdrawn?.(leafOf('<foo xmlns="bar"/>')), false, 'not a document');
    assert.deepEqual(s.asked, []);
  });

  it('rejects when the service\'s nodes cannot be asked (the stage keeps the entry)', async () => {
    await assert.rejects(sinkAsking(new Error('no answer from pubsub.alpha.test')).sink.withdrawn?.(leafOf(payload(note('d1', '2-b')))) ?? Promise.resolve(), /no answer/);
  });
});

describe('nodeOffersItem: only an empty answer or item-not-found says a node does not offer an item', () => {
  const client = (answer: () => Promise<Element[]>): PubsubClient => ({ itemsById: answer }) as unknown as PubsubClient;
  const iqError = (condition: string, type: string) => new IqError(condition, undefined, undefined, SERVICE, type);
  it('of a node known from an earlier run only (not followed now), forbidden, not-allowed and not-authorized say it is closed to us: false', async () => {
    for (const [condition, type] of [['forbidden', 'auth'], ['not-allowed', 'cancel'], ['not-authorized', 'auth']] as const) {
      assert.equal(await nodeOffersItem(client(() => Promise.reject(iqError(condition, type))), SERVICE, '/tags/old', 'd1', false), false, condition);
    }
    await assert.rejects(nodeOffersItem(client(() => Promise.reject(iqError('remote-server-timeout', 'wait'))), SERVICE, '/tags/old', 'd1', false), /remote-server-timeout/);
  });

  it('has it: true; an empty answer: false', async () => {
    assert.equal(await nodeOffersItem(client(async () => [new Element('item', { id: 'd1' })]), SERVICE, '/tags/a', 'd1'), true);
    assert.equal(await nodeOffersItem(client(async () => []), SERVICE, '/tags/a', 'd1'), false);
  });
  for (const [condition, type] of [['item-not-found', 'cancel']]) {
    it(`${type}/${condition}: a final refusal (false)`, async () => {
      assert.equal(await nodeOffersItem(client(() => Promise.reject(iqError(condition as string, type as string))), SERVICE, '/tags/a', 'd1'), false);
    });
  }
  for (const [condition, type] of [['policy-violation', 'wait'], ['resource-constraint', 'wait'], ['remote-server-timeout', 'wait'], ['internal-server-error', 'cancel'], ['service-unavailable', 'cancel'], ['feature-not-implemented', 'cancel'], ['not-authorized', 'auth'], ['forbidden', 'auth'], ['not-allowed', 'cancel'], ['bad-request', 'modify'], ['undefined-condition', '']]) {
    it(`${type || 'no type'}/${condition}: not known (rejects)`, async () => {
      await assert.rejects(nodeOffersItem(client(() => Promise.reject(iqError(condition as string, type as string))), SERVICE, '/tags/a', 'd1'), (err: unknown) => err instanceof IqError && err.condition === condition);
    });
  }
});

describe('nodeHasItem (the retraction\'s carrier lookup): an answer that says "not now" is not "not there"', () => {
  const client = (answer: () => Promise<Element[]>): PubsubClient => ({ itemsById: answer }) as unknown as PubsubClient;
  const iqError = (condition: string, type: string) => new IqError(condition, undefined, undefined, SERVICE, type);
  it('has it: true; an empty answer, item-not-found or a refusal of the node: false', async () => {
    assert.equal(await nodeHasItem(client(async () => [new Element('item', { id: 'd1' })]), SERVICE, '/tags/a', 'd1'), true);
    assert.equal(await nodeHasItem(client(async () => []), SERVICE, '/tags/a', 'd1'), false);
    for (const [condition, type] of [['item-not-found', 'cancel'], ['forbidden', 'auth'], ['not-allowed', 'cancel']] as const) {
      assert.equal(await nodeHasItem(client(() => Promise.reject(iqError(condition, type))), SERVICE, '/tags/a', 'd1'), false, condition);
    }
  });
  it('a rate limit (wait/policy-violation), any other wait, a timeout: not known (rejects), so the document is not deleted on it', async () => {
    for (const [condition, type] of [['policy-violation', 'wait'], ['unexpected-request', 'wait'], ['remote-server-timeout', 'wait'], ['internal-server-error', 'cancel']] as const) {
      await assert.rejects(nodeHasItem(client(() => Promise.reject(iqError(condition, type))), SERVICE, '/tags/a', 'd1'), (err: unknown) => err instanceof IqError && err.condition === condition, `${type}/${condition}`);
    }
  });
});
