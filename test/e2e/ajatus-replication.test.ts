// Ajatus/CouchDB replication end to end: two CouchDB-API servers (pouchdb-server), site A's
// Hermod on Prosody (alpha.test, knowing only its application database), site B's on ejabberd
// (beta.test), federating over s2s. Real databases, real servers, real hermod processes.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { hermodCli, writeHermodConfig, type CouchServer, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { eventually, PASSWORD } from './client.ts';
import { useSite } from './fixtures.ts';

const SLIX = fileURLToPath(new URL('./clients/slixmpp_subscriber.py', import.meta.url));
type Doc = Record<string, unknown> & { _id: string; _rev?: string };

const couch = (server: CouchServer, method: string, pathname: string, body?: unknown): ReturnType<CouchServer['request']> => server.request(method, pathname, body);

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';

const put = (server: CouchServer, db: string, doc: Doc): Promise<string> => server.put(db, doc);

async function get(server: CouchServer, id: string, query = ''): Promise<Doc | undefined> {
  const { status, json } = await couch(server, 'GET', `${CONTENT}/${encodeURIComponent(id)}${query}`);
  return status === 200 ? (json as Doc) : undefined;
}

const note = (id: string, title: string, tags: string[], extra: Record<string, unknown> = {}): Doc => ({
  _id: id,
  value: {
    _type: 'note',
    title: { val: title },
    tags: { val: tags },
    metadata: { creator: { val: 'alice' }, revised: { val: new Date().toISOString() }, deleted: { val: false } },
  },
  ...extra,
});

/** The note deleted the Ajatus way: a live revision whose `value.metadata.deleted.val` is true. */
const ajatusDeleted = (doc: Doc): Doc => {
  const value = doc.value as { metadata: Record<string, unknown> };
  return { ...doc, value: { ...value, metadata: { ...value.metadata, deleted: { val: true } } } };
};

/** Every leaf revision of a document, live and deleted ("<rev>" or "<rev> deleted"), sorted. */
async function leaves(server: CouchServer, id: string): Promise<string[]> {
  const { status, json } = await couch(server, 'GET', `${CONTENT}/${encodeURIComponent(id)}?open_revs=all`);
  assert.equal(status, 200, `leaf revisions of ${id}`);
  return (json as unknown as Array<{ ok?: { _rev: string; _deleted?: boolean } }>).flatMap((r) => (r.ok ? [`${r.ok._rev}${r.ok._deleted ? ' deleted' : ''}`] : [])).sort();
}

type LogLine = Record<string, unknown>;
const linesOf = async (hermod: HermodProcess, match: (l: LogLine) => boolean): Promise<number> => (await hermod.log()).filter(match).length;
/** Waits for more log lines matching than `before` (a site's log file goes on across restarts). */
const moreLines = (hermod: HermodProcess, match: (l: LogLine) => boolean, before: number, what: string): Promise<boolean> =>
  eventually(async () => (await linesOf(hermod, match)) > before, what, 60_000);
/** A retraction of `id` decided on at B, whatever the outcome. */
const RETRACTION_OUTCOMES = ['document deleted by partner retraction', 'partner retraction: document kept', 'retraction not applied: the document changed meanwhile'];
const retractionHandled = (id: string) => (l: LogLine): boolean => l.doc === id && RETRACTION_OUTCOMES.includes(String(l.msg));
/** B caught up with /tags/shared (after a start): from its history, or its current items. */
const caughtUp = (l: LogLine): boolean => (l.msg === 'caught up with partner node from its history' || l.msg === 'caught up with partner node') && l.node === '/tags/shared';

describe('Ajatus replication between two sites', { timeout: 300_000 }, () => {
  const site = useSite({ name: 'ajatus', couches: 2 });
  let couchA: CouchServer;
  let couchB: CouchServer;
  let hermodA: HermodProcess;
  let hermodB: HermodProcess;
  let alpha: ServerInfo;
  let beta: ServerInfo;

  const startA = (): Promise<HermodProcess> =>
    site.hermod({
      server: alpha,
      name: 'site-a',
      // Site A knows only where its application database is: credentials come from there.
      extra: { component: undefined, appDb: { url: couchA.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } },
    });
  const startB = (): Promise<HermodProcess> =>
    site.hermod({ server: beta, name: 'site-b', extra: { appDb: { url: couchB.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } } });

  before(async () => {
    [couchA, couchB] = [site.couch(0), site.couch(1)];
    alpha = site.alpha;
    beta = site.beta;
    await couchA.createDbs(APP, CONTENT);
    await couchB.createDbs(APP, CONTENT);
    await put(couchA, APP, { _id: 'hermod:credentials', component: { jid: alpha.componentJid, secret: alpha.componentSecret, server: alpha.componentService } });
    // A's tags: 'shared' and 'extra' are readable by site B's Hermod; 'secret' by nobody yet.
    await put(couchA, APP, { _id: 'hermod:tag:shared', access_model: 'whitelist', whitelist: [beta.componentJid] });
    await put(couchA, APP, { _id: 'hermod:tag:extra', access_model: 'whitelist', whitelist: [beta.componentJid] });
    await put(couchB, APP, { _id: 'hermod:tag:shared', access_model: 'whitelist', whitelist: [alpha.componentJid] });
    // Partners: B knows a person at A (discovery finds A's Hermod on alpha.test); A knows B's service.
    await put(couchB, CONTENT, { _id: 'contact-alice', value: { _type: 'contact', title: { val: 'Alice' }, jid: { val: 'alice@alpha.test' } } });
    await put(couchA, CONTENT, { _id: 'contact-b', value: { _type: 'contact', title: { val: 'Site B' }, jid: { val: beta.componentJid } } });
    hermodA = await startA();
    hermodB = await startB();
  });

  it('a tagged document with an attachment created at A appears at B with the same _id, _rev and bytes', async () => {
    const bytes = Buffer.from('attachment bytes \u00e5\u00e4\u00f6 \u0000\u0001\u0002', 'utf8');
    const rev = await put(couchA, CONTENT, note('doc-1', 'First note', ['shared'], { _attachments: { 'hello.bin': { content_type: 'application/octet-stream', data: bytes.toString('base64') } } }));
    const atB = await eventually(() => get(couchB, 'doc-1', '?attachments=true'), 'doc-1 at B', 30_000);
    assert.equal(atB._rev, rev);
    const att = (atB._attachments as Record<string, { data: string; content_type: string }>)['hello.bin'];
    assert.equal(att?.content_type, 'application/octet-stream');
    assert.deepEqual(Buffer.from(att?.data ?? '', 'base64'), bytes);
    assert.equal(((atB.value as Record<string, { val: unknown }>).title as { val: string }).val, 'First note');
    const progress = await hermodA.waitForLog((l) => l.msg === 'first publish of ajatus_db_content', 'first-publish progress at A');
    assert.equal(progress.done, progress.total, 'the existing database was published once, with progress shown');
  });

  it('a large attachment travels through XEP-0363 HTTP upload and arrives verified, byte for byte', async () => {
    const big = Buffer.alloc(600 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
    const rev = await put(couchA, CONTENT, note('big-1', 'Large attachment', ['shared'], { _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } }));
    const atB = await eventually(() => get(couchB, 'big-1', '?attachments=true'), 'big-1 at B', 30_000);
    assert.equal(atB._rev, rev);
    const att = (atB._attachments as Record<string, { data: string }>)['big.bin'];
    assert.ok(Buffer.from(att?.data ?? '', 'base64').equals(big), 'same bytes');
    await hermodA.waitForLog((l) => l.msg === 'attachment uploaded' && l.doc === 'big-1' && l.bytes === big.length, 'upload logged at A');
  });

  it('updates and deletion follow', async () => {
    const current = (await get(couchA, 'doc-1')) as Doc;
    const rev2 = await put(couchA, CONTENT, { ...current, value: { ...(current.value as object), title: { val: 'Edited' } } });
    await eventually(async () => (await get(couchB, 'doc-1'))?._rev === rev2, 'update at B');
    const del = await couch(couchA, 'DELETE', `${CONTENT}/doc-1?rev=${rev2}`);
    assert.equal(del.status, 200);
    await eventually(async () => (await get(couchB, 'doc-1')) === undefined, 'deletion at B');
    const changes = await couch(couchB, 'GET', `${CONTENT}/_changes?since=0`);
    const entry = (changes.json.results as Array<{ id: string; deleted?: boolean; changes: Array<{ rev: string }> }>).find((c) => c.id === 'doc-1');
    assert.equal(entry?.deleted, true, 'deleted as a revision (a tombstone), not purged');
    assert.match(entry?.changes[0]?.rev ?? '', /^3-/, 'the tombstone follows the two replicated revisions');
  });

  it('a document in two tags arrives once, as one revision', async () => {
    const rev = await put(couchA, CONTENT, note('doc-2', 'Two tags', ['shared', 'extra']));
    const atB = await eventually(() => get(couchB, 'doc-2', '?conflicts=true&revs_info=true'), 'doc-2 at B');
    assert.equal(atB._rev, rev);
    assert.equal(atB._conflicts, undefined);
    assert.equal((atB._revs_info as unknown[]).length, 1);
  });

  it('a whitelisted plain XMPP client (slixmpp) subscribes to /tags/shared and reads the Atom entries', async () => {
    const tag = (await couch(couchA, 'GET', `${APP}/hermod:tag:shared`)).json as Doc;
    await put(couchA, APP, { ...tag, whitelist: [beta.componentJid, `sam@${beta.domain}`] });
    await site.env.register(beta, 'sam', PASSWORD);
    await hermodA.waitForLog((l) => l.msg === 'tag whitelist applied' && l.tag === 'shared', 'whitelist applied at A');
    const child = spawn('/usr/bin/python3', [SLIX, `sam@${beta.domain}/slix`, PASSWORD, beta.ip, '5222', alpha.componentJid, '/tags/shared', 'for-sam'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errText = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (errText += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      await eventually(() => out.includes('READY') || (child.exitCode !== null && Promise.reject(new Error(`slixmpp exited: ${out} ${errText}`))), 'slixmpp subscribed', 30_000, );
      await put(couchA, CONTENT, note('for-sam', 'Readable by any client', ['shared']));
      assert.equal(await exited, 0, `slixmpp failed: ${out}\n${errText}`);
      const result = JSON.parse(out.trim().split('\n').at(-1) as string) as { notified: Array<{ id: string; title: string }>; items: string[] };
      assert.deepEqual(result.notified.map((n) => [n.id, n.title]).at(-1), ['for-sam', 'Readable by any client']);
      assert.ok(result.items.includes('for-sam') && result.items.includes('doc-2'));
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('a tag B is not whitelisted for gives B nothing; added to the whitelist it flows; removed it stops', async () => {
    await put(couchA, CONTENT, note('secret-1', 'Secret', ['secret']));
    await hermodB.waitForLog((l) => l.msg === 'partner node refused the subscription' && String(l.node) === '/tags/secret' && String(l.reason).includes('closed-node'), 'closed-node refusal at B', 30_000);
    assert.equal(await get(couchB, 'secret-1'), undefined);

    const wl = await put(couchA, APP, { _id: 'hermod:tag:secret', access_model: 'whitelist', whitelist: [beta.componentJid] });
    await eventually(() => get(couchB, 'secret-1'), 'secret-1 at B after whitelisting (catch-up)', 30_000);
    await put(couchA, CONTENT, note('secret-2', 'Secret two', ['secret']));
    await eventually(() => get(couchB, 'secret-2'), 'secret-2 at B', 30_000);

    await put(couchA, APP, { _id: 'hermod:tag:secret', _rev: wl, access_model: 'whitelist', whitelist: [] });
    await hermodB.waitForLog((l) => l.msg === 'partner ended our subscription' && l.node === '/tags/secret', 'B told its subscription ended', 30_000);
    await put(couchA, CONTENT, note('secret-3', 'Secret three', ['secret']));
    await put(couchA, CONTENT, note('fence-1', 'Fence', ['shared']));
    await eventually(() => get(couchB, 'fence-1'), 'fence at B');
    assert.equal(await get(couchB, 'secret-3'), undefined, 'removed from the whitelist: nothing more arrives');
  });

  it('concurrent edits on both sides end with the same winner on both, the loser kept as a conflict', async () => {
    const rev1 = await put(couchA, CONTENT, note('both', 'Base', ['shared']));
    await eventually(async () => (await get(couchB, 'both'))?._rev === rev1, 'base at B');
    // Stop B's Hermod so the two edits are truly concurrent, then edit both sides.
    await hermodB.stop();
    const base = (await get(couchA, 'both')) as Doc;
    const revA = await put(couchA, CONTENT, { ...base, value: { ...(base.value as object), title: { val: 'Edited at A' } } });
    const revB = await put(couchB, CONTENT, { ...base, value: { ...(base.value as object), title: { val: 'Edited at B' } } });
    assert.notEqual(revA, revB);
    hermodB = await startB();
    const converged = async (): Promise<boolean> => {
      const [a, b] = await Promise.all([get(couchA, 'both', '?conflicts=true'), get(couchB, 'both', '?conflicts=true')]);
      return !!a && !!b && a._rev === b._rev && JSON.stringify(a._conflicts) === JSON.stringify(b._conflicts) && Array.isArray(a._conflicts) && a._conflicts.length === 1;
    };
    await eventually(converged, 'both sites agree on winner and conflict', 60_000);
    const a = (await get(couchA, 'both', '?conflicts=true')) as Doc;
    assert.deepEqual([a._rev, ...(a._conflicts as string[])].sort(), [revA, revB].sort());
  });

  it('a large attachment from B (ejabberd mod_http_upload) reaches A verified', async () => {
    const big = Buffer.alloc(400 * 1024, 0x5a);
    big.write('from site B', 1000);
    await put(couchB, CONTENT, note('big-b', 'Large from B', ['shared'], { _attachments: { 'b.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } }));
    const atA = await eventually(() => get(couchA, 'big-b', '?attachments=true'), 'big-b at A', 30_000);
    assert.ok(Buffer.from((atA._attachments as Record<string, { data: string }>)['b.bin']?.data ?? '', 'base64').equals(big));
    await hermodB.waitForLog((l) => l.msg === 'attachment uploaded' && l.doc === 'big-b', 'upload logged at B');
  });

  it('B stopped during 100 edits at A catches up after restart, with no echo back to A', async () => {
    await hermodB.stop();
    let rev = await put(couchA, CONTENT, note('busy', 'Edit 0', ['shared']));
    for (let i = 1; i < 100; i++) {
      rev = await put(couchA, CONTENT, { ...note('busy', `Edit ${i}`, ['shared']), _rev: rev });
    }
    hermodB = await startB();
    await eventually(async () => (await get(couchB, 'busy'))?._rev === rev, 'B caught up with edit 99', 60_000);
    const logA = await hermodA.log();
    const echoes = logA.filter((l) => l.msg === 'published document' && l.doc === 'busy' && l.rev === rev);
    assert.equal(echoes.length, 1, 'A published the last revision once');
    const logB = await hermodB.log();
    assert.equal(logB.filter((l) => l.msg === 'published document' && l.doc === 'busy').length, 0, 'B does not publish what it imported');
  });

  it('a deletion at A while B is offline reaches B from the node history (XEP-0313) after restart', async () => {
    const rev = await put(couchA, CONTENT, note('gone-while-away', 'Soon deleted', ['shared']));
    await eventually(async () => (await get(couchB, 'gone-while-away'))?._rev === rev, 'doc at B');
    await hermodB.stop();
    await couch(couchA, 'DELETE', `${CONTENT}/gone-while-away?rev=${rev}`);
    const keptRev = await put(couchA, CONTENT, note('edited-while-away', 'Edited while B was away', ['shared']));
    hermodB = await startB();
    await eventually(async () => (await get(couchB, 'edited-while-away'))?._rev === keptRev, 'edit at B after restart', 30_000);
    await eventually(async () => (await get(couchB, 'gone-while-away')) === undefined, 'deletion at B after restart', 30_000);
    await hermodB.waitForLog((l) => l.msg === 'caught up with partner node from its history' && l.node === '/tags/shared', 'B replayed the history');
  });

  it('CouchDB at A restarted mid-stream loses and duplicates nothing', async () => {
    const ids = Array.from({ length: 30 }, (_, i) => `restart-${i}`);
    for (const id of ids.slice(0, 15)) await put(couchA, CONTENT, note(id, id, ['shared']));
    await couchA.restart();
    for (const id of ids.slice(15)) await put(couchA, CONTENT, note(id, id, ['shared']));
    await eventually(async () => (await Promise.all(ids.map((id) => get(couchB, id)))).every(Boolean), 'all 30 at B', 60_000);
    const published = (await hermodA.log()).filter((l) => l.msg === 'published document' && String(l.doc).startsWith('restart-'));
    assert.deepEqual(published.map((l) => l.doc).sort(), [...ids].sort(), 'each document published exactly once');
  });

  it('a batch written at A while B is stopped (small notes, attachments over the inline budget, conflicts and deletions of one note) reaches B from the history in shared flushes, exactly as at A, with no echo', async (t) => {
    await hermodB.stop();
    let stopped = true;
    t.after(async () => {
      if (stopped) hermodB = await startB(); // the next tests need B
    });
    const ids = Array.from({ length: 30 }, (_, i) => `batch-${i}`);
    const big = (i: number): Buffer => Buffer.alloc(200 * 1024, i + 1); // over ajatus.inlineAttachmentMax (128 KiB): XEP-0363
    const load = await couch(couchA, 'POST', `${CONTENT}/_bulk_docs`, {
      docs: ids.map((id, i) => note(id, id, ['shared'], i < 3 ? { _attachments: { 'big.bin': { content_type: 'application/octet-stream', data: big(i).toString('base64') } } } : {})),
    });
    assert.equal(load.status, 201);
    // One note edited, given a second branch (as a third site would), that branch deleted; another deleted outright.
    const base = await put(couchA, CONTENT, note('batch-conflict', 'Base', ['shared']));
    const edited = await put(couchA, CONTENT, { ...note('batch-conflict', 'Edited', ['shared']), _rev: base });
    const other = 'b'.repeat(32);
    assert.equal((await couch(couchA, 'POST', `${CONTENT}/_bulk_docs`, { new_edits: false, docs: [{ ...note('batch-conflict', 'Other branch', ['shared']), _rev: `2-${other}`, _revisions: { start: 2, ids: [other, base.slice(2)] } }] })).status, 201);
    assert.equal((await couch(couchA, 'DELETE', `${CONTENT}/batch-conflict?rev=2-${other}`)).status, 200);
    const published = async (id: string, rev?: string): Promise<boolean> => (await hermodA.log()).some((l) => l.msg === 'published document' && l.doc === id && (rev === undefined || l.rev === rev));
    const gone = await put(couchA, CONTENT, note('batch-gone', 'Soon deleted', ['shared']));
    await eventually(() => published('batch-gone', gone), 'batch-gone published by A (its deletion then goes to the same node)', 60_000);
    const deleted = await couch(couchA, 'DELETE', `${CONTENT}/batch-gone?rev=${gone}`);
    assert.equal(deleted.status, 200);
    await eventually(async () => (await Promise.all([...ids.map((id) => published(id)), published('batch-conflict', edited), published('batch-gone', String(deleted.json.rev))])).every(Boolean), 'A published the batch', 60_000);

    const caught = await linesOf(hermodB, caughtUp);
    const logged = (await hermodB.log()).length;
    hermodB = await startB();
    stopped = false;
    await moreLines(hermodB, caughtUp, caught, 'B caught up with /tags/shared from its history');
    for (const id of [...ids, 'batch-conflict', 'batch-gone']) assert.deepEqual(await leaves(couchB, id), await leaves(couchA, id), `${id}: B holds exactly A's leaf revisions`);
    await sameRevisions('batch-conflict', edited);
    assert.equal(await get(couchB, 'batch-gone'), undefined, 'deleted at B too');
    for (let i = 0; i < 3; i++) {
      const att = ((await get(couchB, `batch-${i}`, '?attachments=true'))?._attachments as Record<string, { data: string }>)['big.bin'];
      assert.ok(Buffer.from(att?.data ?? '', 'base64').equals(big(i)), `batch-${i}: the uploaded attachment arrived byte for byte`);
    }
    const flushes = (await hermodB.log()).slice(logged).filter((l) => l.msg === 'flush written');
    assert.ok(flushes.some((l) => Number(l.docs) >= 10), `the replayed history was written in shared flushes (${JSON.stringify(flushes.map((l) => l.docs))})`);
    const logB = await hermodB.log();
    assert.deepEqual(logB.filter((l) => l.msg === 'published document' && String(l.doc).startsWith('batch-')), [], 'B publishes nothing it imported');
  });

  it('a tag removed at A retracts the item from that node; B keeps the document while another followed tag has it', async () => {
    const rev1 = await put(couchA, CONTENT, note('moving', 'In two tags', ['shared', 'extra']));
    await eventually(async () => (await get(couchB, 'moving'))?._rev === rev1, 'moving at B');
    const rev2 = await put(couchA, CONTENT, { ...note('moving', 'Only shared now', ['shared']), _rev: rev1 });
    await hermodB.waitForLog((l) => l.msg === 'document written' && l.doc === 'moving' && JSON.stringify(l.revs).includes(rev2), 'rev 2 written at B');
    await put(couchA, CONTENT, note('fence-2', 'Fence', ['extra']));
    await eventually(() => get(couchB, 'fence-2'), 'fence-2 at B (after the retraction from /tags/extra)');
    assert.equal((await get(couchB, 'moving'))?._rev, rev2, 'kept: /tags/shared still carries it');
    await put(couchA, CONTENT, { ...note('moving', 'No replicated tag', ['private']), _rev: rev2 });
    await eventually(async () => (await get(couchB, 'moving')) === undefined, 'deleted at B once no followed node carries it');
  });

  /** B's winner is A's revision `rev`, with A's conflicts, and B holds exactly A's leaves (no revision of B's own). */
  async function sameRevisions(id: string, rev: string): Promise<void> {
    const [a, b] = await Promise.all([get(couchA, id, '?conflicts=true'), get(couchB, id, '?conflicts=true')]);
    assert.equal(a?._rev, rev);
    assert.equal(b?._rev, rev, `A's revision is the winner at B too (B has ${JSON.stringify(await leaves(couchB, id))})`);
    assert.deepEqual(b?._conflicts, a?._conflicts, 'the same conflicts');
    assert.deepEqual(await leaves(couchB, id), await leaves(couchA, id), "B holds exactly A's leaf revisions, none of its own");
  }

  it('a document whose every replicated tag is removed at A is deleted at B, also when two followed nodes carried it', async () => {
    const rev1 = await put(couchA, CONTENT, note('untagged', 'On two nodes', ['shared', 'extra']));
    const rev1p = await put(couchA, CONTENT, note('now-private', 'On two nodes', ['shared', 'extra']));
    const rev1e = await put(couchA, CONTENT, note('edited-at-b', 'On two nodes', ['shared', 'extra']));
    await eventually(async () => (await get(couchB, 'untagged'))?._rev === rev1 && (await get(couchB, 'now-private'))?._rev === rev1p && (await get(couchB, 'edited-at-b'))?._rev === rev1e, 'the notes at B');
    // Edited at B (under a tag of B's own that A does not follow): a local edit no retraction deletes.
    const revB = await put(couchB, CONTENT, { ...note('edited-at-b', 'Edited at B', ['b-only']), _rev: rev1e });
    const handled = await linesOf(hermodB, retractionHandled('edited-at-b'));
    const rev2 = await put(couchA, CONTENT, { ...note('untagged', 'No tags now', []), _rev: rev1 });
    const rev2p = await put(couchA, CONTENT, { ...note('now-private', 'Only a tag B does not get', ['private']), _rev: rev1p });
    await put(couchA, CONTENT, { ...note('edited-at-b', 'No tags now', []), _rev: rev1e });
    await eventually(async () => (await get(couchB, 'untagged')) === undefined && (await get(couchB, 'now-private')) === undefined, 'both deleted at B', 30_000);
    await moreLines(hermodB, retractionHandled('edited-at-b'), handled + 1, 'both retractions of edited-at-b handled at B');
    assert.equal((await get(couchB, 'edited-at-b'))?._rev, revB, "B's local edit stays");
    // B's deletion is its own business: it does not travel back and delete A's documents.
    await put(couchB, CONTENT, note('fence-b', 'Fence from B', ['shared']));
    await eventually(() => get(couchA, 'fence-b'), 'fence from B at A', 30_000);
    assert.equal((await get(couchA, 'untagged'))?._rev, rev2);
    assert.equal((await get(couchA, 'now-private'))?._rev, rev2p);
  });

  it("a document deleted the Ajatus way (metadata.deleted) has A's revision as winner at B, running and after B restarts", async () => {
    const id = 'ajatus-deleted';
    const rev1 = await put(couchA, CONTENT, note(id, 'Deleted the Ajatus way', ['shared']));
    await eventually(async () => (await get(couchB, id))?._rev === rev1, 'note at B');
    const handled = await linesOf(hermodB, retractionHandled(id));
    const rev2 = await put(couchA, CONTENT, ajatusDeleted({ ...note(id, 'Deleted the Ajatus way', ['shared']), _rev: rev1 }));
    await moreLines(hermodB, retractionHandled(id), handled, 'the retraction handled at B');
    await sameRevisions(id, rev2);

    // A restart replays the node's history since the saved position: the same retractions again change nothing.
    const untagged = await leaves(couchB, 'untagged');
    const caught = await linesOf(hermodB, caughtUp);
    await hermodB.stop();
    hermodB = await startB();
    await moreLines(hermodB, caughtUp, caught, 'B caught up with /tags/shared after the restart');
    await sameRevisions(id, rev2);
    assert.deepEqual(await leaves(couchB, 'untagged'), untagged, 'a replayed retraction changes nothing');
  });

  it("a document deleted the Ajatus way while B is stopped: caught up from history, B has A's winner and conflicts exactly", async () => {
    const id = 'ajatus-deleted-away';
    const rev1 = await put(couchA, CONTENT, note(id, 'Base', ['shared']));
    const rev2 = await put(couchA, CONTENT, { ...note(id, 'Edited at A', ['shared']), _rev: rev1 });
    // A second branch at A (as a replication from a third site makes it): a conflict that loses.
    const other = '0'.repeat(32);
    const bulk = await couch(couchA, 'POST', `${CONTENT}/_bulk_docs`, { new_edits: false, docs: [{ ...note(id, 'Other branch', ['shared']), _rev: `2-${other}`, _revisions: { start: 2, ids: [other, rev1.slice(2)] } }] });
    assert.equal(bulk.status, 201);
    await eventually(async () => JSON.stringify((await get(couchB, id, '?conflicts=true'))?._conflicts) === JSON.stringify([`2-${other}`]), 'the conflict at B');
    const caught = await linesOf(hermodB, caughtUp);
    await hermodB.stop();
    const rev3 = await put(couchA, CONTENT, ajatusDeleted({ ...note(id, 'Edited at A', ['shared']), _rev: rev2 }));
    hermodB = await startB();
    await moreLines(hermodB, caughtUp, caught, 'B caught up with /tags/shared after the restart');
    await sameRevisions(id, rev3);

    // The conflict resolved at A after the deletion: the document stays deleted, B follows.
    assert.equal((await couch(couchA, 'DELETE', `${CONTENT}/${id}?rev=2-${other}`)).status, 200);
    await eventually(async () => (await get(couchB, id, '?conflicts=true'))?._conflicts === undefined, 'the conflict resolved at B too', 30_000);
    await sameRevisions(id, rev3);
  });

  it("a document B's database refuses (validate_doc_update) goes to B's quarantine and the node goes on; a restart does not replay it; `hermod quarantine retry` writes it once the database takes it", async () => {
    const guard = await put(couchB, CONTENT, {
      _id: '_design/guard',
      validate_doc_update: "function (doc) { if (doc.value && doc.value.title && doc.value.title.val === 'Refused at B') throw({ forbidden: 'B takes no such note' }); }",
    });
    // pouchdb-server's validation plugin loses replicated revisions of documents B holds (README): said at once.
    const told = await hermodB.waitForLog((l) => String(l.msg).startsWith('pouchdb-server drops partners\' revisions') && JSON.stringify(l.designDocs) === '["_design/guard"]', 'the pouchdb-server validation error at B', 30_000);
    assert.equal(told.db, CONTENT);
    const refusedRev = await put(couchA, CONTENT, note('refused-at-b', 'Refused at B', ['shared']));
    const afterRev = await put(couchA, CONTENT, note('after-the-refused', 'Taken at B', ['shared']));
    const quarantined = await hermodB.waitForLog((l) => l.msg === 'leaf quarantined' && l.item === 'refused-at-b', 'the refused note quarantined at B', 30_000);
    await eventually(async () => (await get(couchB, 'after-the-refused'))?._rev === afterRev, 'the next note written at B', 30_000);
    assert.equal(await get(couchB, 'refused-at-b'), undefined);
    const listed = await hermodCli('quarantine', 'list', '--config', hermodB.configFile, '--json');
    assert.equal(listed.code, 0, listed.stderr);
    const [entry, ...others] = (JSON.parse(listed.stdout) as { entries: Array<{ id: string; node: string; itemId: string; reason: string; attempts: number }> }).entries;
    assert.equal(others.length, 0);
    assert.equal(entry?.id, quarantined.id);
    assert.equal(entry?.node, '/tags/shared');
    assert.match(entry?.reason ?? '', /B takes no such note/);

    // The position moved past it: a restart replays nothing of it (before, every restart read it again).
    const before = await linesOf(hermodB, caughtUp);
    await hermodB.stop();
    hermodB = await startB();
    await moreLines(hermodB, caughtUp, before, 'B caught up with /tags/shared after the restart');
    const caught = (await hermodB.log()).filter(caughtUp).at(-1);
    assert.equal(caught?.msg, 'caught up with partner node from its history');
    assert.equal(caught?.entries, 0, 'nothing replayed: the refused note was handled');
    const again = JSON.parse((await hermodCli('quarantine', 'list', '--config', hermodB.configFile, '--json')).stdout) as { entries: Array<{ attempts: number }> };
    assert.deepEqual(again.entries.map((e) => e.attempts), [1], 'not tried again after the restart');

    // The guard lifted: the operator retries it and it is written with A's revision.
    assert.equal((await couch(couchB, 'DELETE', `${CONTENT}/_design/guard?rev=${guard}`)).status, 200);
    const retried = await hermodCli('quarantine', 'retry', 'all', '--config', hermodB.configFile);
    assert.equal(retried.code, 0, retried.stderr);
    await eventually(async () => (await get(couchB, 'refused-at-b'))?._rev === refusedRev, 'the quarantined note written at B', 30_000);
    await eventually(async () => (await hermodCli('quarantine', 'list', '--config', hermodB.configFile)).stdout.includes('0 quarantined'), 'the quarantine empty');
  });

  it("a refused edit A withdraws afterwards leaves B's quarantine, and a retry does not bring back what the retraction deleted; a refused deletion stays and is written", async () => {
    const rev1 = await put(couchA, CONTENT, note('withdrawn', 'Taken at B', ['shared']));
    await eventually(async () => (await get(couchB, 'withdrawn'))?._rev === rev1, 'the note at B');
    // Writes of documents B holds only while no guard stands: pouchdb-server's validation
    // (pouchdb-validation 4.2.0) replaces the `_revisions` of every write with the stored
    // document's, so a replicated revision of a document B has is dropped without an error.
    const guard = await put(couchB, CONTENT, {
      _id: '_design/guard-withdrawn',
      validate_doc_update: "function (doc) { if (doc.value && doc.value.title && doc.value.title.val === 'Withdrawn by A') throw({ forbidden: 'B takes no such note' }); }",
    });
    const quarantined = (id: string) => (l: LogLine): boolean => l.msg === 'leaf quarantined' && l.item === id;
    const rev2 = await put(couchA, CONTENT, { ...note('withdrawn', 'Withdrawn by A', ['shared']), _rev: rev1 });
    const del1 = await put(couchA, CONTENT, note('deleted-refused', 'Withdrawn by A', ['shared']));
    await hermodB.waitForLog(quarantined('withdrawn'), 'the edit quarantined at B', 30_000);
    const first = await hermodB.waitForLog(quarantined('deleted-refused'), 'the other note quarantined at B', 30_000);
    // Deleted at A the Ajatus way (published, then retracted): the deletion leaf is refused too
    // and replaces the entry; the retraction after it keeps it (a deletion brings nothing back).
    const del2 = await put(couchA, CONTENT, ajatusDeleted({ ...note('deleted-refused', 'Withdrawn by A', ['shared']), _rev: del1 }));
    await hermodB.waitForLog((l) => quarantined('deleted-refused')(l) && l.time !== first.time, 'the deletion quarantined at B', 30_000);
    assert.equal((await couch(couchB, 'DELETE', `${CONTENT}/_design/guard-withdrawn?rev=${guard}`)).status, 200);

    // A takes the edited note out of every replicated tag: the retraction deletes it at B, and the
    // refused edit leaves the quarantine (written later, live beats B's deletion: it would be back).
    await put(couchA, CONTENT, { ...note('withdrawn', 'Withdrawn by A', []), _rev: rev2 });
    const dropped = await hermodB.waitForLog((l) => l.msg === 'quarantined leaf dropped: its partner withdrew the item' && l.item === 'withdrawn', 'the withdrawn edit dropped at B', 30_000).catch(async (err: unknown) => {
      // Seen once in a CI run (not reproduced in 11 runs since): what each site logged of the note, for the next one.
      const about = async (h: HermodProcess): Promise<string> => JSON.stringify((await h.log()).filter((l) => JSON.stringify(l).includes('withdrawn')).slice(-15));
      throw new Error(`${String(err)}\nB: ${await about(hermodB)}\nA: ${await about(hermodA)}`);
    });
    assert.match(String(dropped.reason), /B takes no such note/);
    await eventually(async () => (await get(couchB, 'withdrawn')) === undefined, 'the note deleted at B by the retraction');
    const listed = JSON.parse((await hermodCli('quarantine', 'list', '--config', hermodB.configFile, '--json')).stdout) as { entries: Array<{ itemId: string }> };
    assert.deepEqual(listed.entries.map((e) => e.itemId), ['deleted-refused'], 'the deletion stays quarantined');

    // Everything retried: A's deletion is written (A's revision), the withdrawn edit is not back.
    const retried = await hermodCli('quarantine', 'retry', 'all', '--config', hermodB.configFile);
    assert.equal(retried.code, 0, retried.stderr);
    await eventually(async () => (await get(couchB, 'deleted-refused'))?._rev === del2, "A's deletion written at B from the quarantine", 30_000);
    await eventually(async () => (await hermodCli('quarantine', 'list', '--config', hermodB.configFile)).stdout.includes('0 quarantined'), 'the quarantine empty');
    assert.equal(await get(couchB, 'withdrawn'), undefined, 'the withdrawn edit not brought back');
    assert.deepEqual((await leaves(couchB, 'withdrawn')).filter((l) => !l.endsWith(' deleted')), [], 'no live leaf of it at B');
  });

  it('hermod:partner:<jid> targetDb puts that partner\'s documents into another local database', async () => {
    await couchB.createDbs('from_alpha');
    await put(couchB, APP, { _id: 'hermod:partner:alice@alpha.test', follow: 'all', targetDb: 'from_alpha' });
    await hermodB.waitForLog((l) => l.msg === 'partner found' || l.msg === 'subscribed to partner node', 'B running');
    await eventually(async () => {
      await put(couchA, CONTENT, note(`routed-${Date.now()}`, 'To the target db', ['shared']));
      const { json } = await couch(couchB, 'GET', 'from_alpha/_all_docs');
      return (json.rows as Array<{ id: string }>).some((r) => r.id.startsWith('routed-'));
    }, 'a document in from_alpha', 30_000);
    const inContent = await couch(couchB, 'GET', `${CONTENT}/_all_docs?startkey="routed-"&endkey="routed-\ufff0"`);
    assert.deepEqual(inContent.json.rows, [], 'not written to the content database');
  });

  it('the component secret read from ajatus_db never appears in the logs', async () => {
    const text = JSON.stringify([...(await hermodA.log()), ...(await hermodB.log())]);
    assert.ok(text.length > 1000, 'there are logs to look at');
    assert.ok(!text.includes(alpha.componentSecret) && !text.includes(beta.componentSecret));
  });

  it('B migrated to the CouchDB store and started from a fresh dataDir (as a standby would) resumes where it was: nothing republished, catch-up from its history position', async () => {
    // A's documents go to B's content database again (the targetDb test routed them elsewhere).
    const partner = await couch(couchB, 'GET', `${APP}/${encodeURIComponent('hermod:partner:alice@alpha.test')}`);
    await put(couchB, APP, { _id: 'hermod:partner:alice@alpha.test', _rev: String(partner.json._rev), follow: 'all' });
    await hermodB.stop();
    const missed = await put(couchA, CONTENT, note('moved-1', 'While B moves', ['shared']));
    const extra = { appDb: { url: couchB.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 }, store: { backend: 'couchdb', couchdb: { url: couchB.url, db: 'hermod_store' } } };
    const migrated = await hermodCli('migrate', '--from', 'level', '--to', 'couchdb', '--config', await writeHermodConfig({ server: beta, dir: site.dir, name: 'site-b', extra }));
    assert.equal(migrated.code, 0, migrated.stderr);
    hermodB = await site.hermod({ server: beta, name: 'site-b-standby', extra });
    const following = await hermodB.waitForLog((l) => l.msg === 'following changes', 'B following its content database');
    assert.notEqual(following.since, '0', 'the changes-feed checkpoint is in the store: B does not publish its database again');
    const caught = await hermodB.waitForLog(caughtUp, 'B caught up with /tags/shared', 60_000);
    assert.equal(caught.msg, 'caught up with partner node from its history', 'the history position is in the store');
    await eventually(async () => (await get(couchB, 'moved-1'))?._rev === missed, 'the document A wrote while B moved, at B', 30_000);
    const live = await put(couchA, CONTENT, note('moved-2', 'After the move', ['shared']));
    await eventually(async () => (await get(couchB, 'moved-2'))?._rev === live, 'a live document at B on the CouchDB store', 30_000);
    assert.equal(await linesOf(hermodB, (l) => l.msg === 'first publish of ajatus_db_content'), 0);
  });

  it("a large attachment written while A's server is down waits for the upload service and reaches B once the server is back (not left until the next edit)", async () => {
    const online = await linesOf(hermodA, (l) => l.msg === 'component online');
    await site.env.stopServer(alpha);
    try {
      const big = Buffer.alloc(300 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 131) % 253;
      const rev = await put(couchA, CONTENT, note('big-while-down', 'Uploaded later', ['shared'], { _attachments: { 'later.bin': { content_type: 'application/octet-stream', data: big.toString('base64') } } }));
      const failed = await hermodA.waitForLog((l) => l.msg === 'document not published; will try again' && l.doc === 'big-while-down', 'the failed upload logged at A', 30_000);
      assert.match(String(failed.reason), /could not be uploaded/);
      await site.env.startServer(alpha);
      await moreLines(hermodA, (l) => l.msg === 'component online', online, 'A online again');
      const atB = await eventually(async () => {
        const doc = await get(couchB, 'big-while-down', '?attachments=true');
        return doc?._rev === rev ? doc : undefined;
      }, 'big-while-down at B', 90_000);
      const att = (atB._attachments as Record<string, { data: string }>)['later.bin'];
      assert.ok(Buffer.from(att?.data ?? '', 'base64').equals(big), 'same bytes');
      await hermodA.waitForLog((l) => l.msg === 'document published after failed attempts' && l.doc === 'big-while-down', 'A logged the late publication');
    } finally {
      await site.env.startServer(alpha).catch(() => undefined); // a no-op when it runs
    }
  });
});
