// Cross-system replication through per-subscription XSLT, end to end: site A runs Midgard
// (Hermod on Prosody, signals on a private dbus-daemon, an inbound spool), site B runs Ajatus
// (Hermod on ejabberd, a pouchdb-server). A follows B's /tags/news through ajatus2midgard.xsl;
// B follows A's /midgard_article/all through midgard2ajatus.xsl. Also: a stylesheet that does
// not compile pauses only its subscription; a failing transform lands in the quarantine and
// `hermod quarantine retry` delivers it once the stylesheet is fixed.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseMidgardXml, type MidgardDocument } from '../../src/codecs/midgard.ts';
import { hermodCli, type CouchServer, type DbusDaemon, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const SHIPPED = fileURLToPath(new URL('../../stylesheets/', import.meta.url));
const MGD = '/org/midgardproject/mgdschema';
const ARTICLE = '29a8d8f0a9823c53fba2b3f96b59e8ec';
const TOPIC_NEWS = '51bd22ef3b8b066c7e72680ab6ad8845';
const APP = 'ajatus_db';
const CONTENT = 'ajatus_db_content';
const md5 = (s: string): string => createHash('md5').update(s).digest('hex');

type Doc = Record<string, unknown> & { _id: string; _rev?: string };
type Field = { val: unknown };

const BROKEN = `<?xml version="1.0"?>
<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <xsl:value-of select="count((1, 2"/>
  </xsl:template>
</xsl:stylesheet>
`;
const FRAGILE = `<?xml version="1.0"?>
<xsl:stylesheet version="3.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <xsl:message terminate="yes">fragile.xsl: this stylesheet is not finished</xsl:message>
  </xsl:template>
</xsl:stylesheet>
`;

const note = (id: string, title: string, tags: string[], revised: string): Doc => ({
  _id: id,
  value: { _type: 'note', title: { val: title }, content: { val: `Body of ${title}` }, tags: { val: tags }, metadata: { creator: { val: 'bob' }, created: { val: '2026-11-25T09:00:00.000Z' }, revised: { val: revised }, deleted: { val: false } } },
});

describe('XSLT: Midgard and Ajatus replicating to each other', { timeout: 300_000 }, () => {
  const site = useSite({ name: 'xslt', couches: 1 });
  let dir: string;
  let alpha: ServerInfo;
  let beta: ServerInfo;
  let bus: DbusDaemon;
  let couch: CouchServer;
  let hermodA: HermodProcess;
  let hermodB: HermodProcess;
  let inboundA: string;

  const getB = async (id: string): Promise<Doc | undefined> => {
    const { status, json } = await couch.request('GET', `${CONTENT}/${encodeURIComponent(id)}`);
    return status === 200 ? (json as Doc) : undefined;
  };
  const inbound = async (): Promise<Array<{ name: string; doc: MidgardDocument }>> => {
    const names = (await readdir(inboundA).catch(() => [] as string[])).filter((n) => n.endsWith('.xml') && !n.startsWith('.')).sort();
    return Promise.all(names.map(async (name) => ({ name, doc: parseMidgardXml(await readFile(path.join(inboundA, name), 'utf8')) })));
  };
  const arrivedAtA = (guid: string, check: (doc: MidgardDocument) => boolean, what: string): Promise<MidgardDocument> =>
    eventually(async () => (await inbound()).find((f) => f.doc.main?.guid === guid && check(f.doc))?.doc, what, 30_000);
  const field = (doc: Doc | undefined, name: string): unknown => ((doc?.value as Record<string, Field> | undefined)?.[name] as Field | undefined)?.val;

  before(async () => {
    dir = site.dir;
    [bus, couch] = [await site.dbus('bus'), site.couch()];
    alpha = site.alpha;
    beta = site.beta;
    inboundA = path.join(dir, 'a-inbound');
    await writeFile(path.join(dir, 'broken.xsl'), BROKEN);
    await writeFile(path.join(dir, 'fragile.xsl'), FRAGILE);
    await couch.createDbs(APP, CONTENT);
    // B: its tags are readable by A's service; A's Midgard nodes go through midgard2ajatus.xsl, /site/news through a broken stylesheet.
    for (const tag of ['news', 'fragile']) await couch.put(APP, { _id: `hermod:tag:${tag}`, access_model: 'whitelist', whitelist: [alpha.componentJid] });
    await couch.put(APP, {
      _id: `hermod:partner:${alpha.componentJid}`,
      follow: ['/midgard_article/all', '/site/news'],
      transform: { '/midgard_article/all': { stylesheet: 'midgard2ajatus.xsl', params: { tags: 'from-midgard' } }, '/site/news': 'broken.xsl' },
    });
    await couch.put(CONTENT, { _id: 'contact-site-a', value: { _type: 'contact', title: { val: 'Site A' }, jid: { val: alpha.componentJid } } });
    hermodA = await site.hermod({
      server: alpha,
      name: 'site-a',
      extra: {
        midgard: {
          bus: bus.address,
          inbound: './a-inbound',
          topicsExport: path.join(FIXTURES, 'topics-export.xml'),
          nodes: { paths: [{ node: '/site/news', regexp: '^/site/news/' }] },
          access: { '*': { access_model: 'whitelist', whitelist: [beta.componentJid] } },
          partners: [
            {
              jid: beta.componentJid,
              follow: ['/tags/news', '/tags/fragile'],
              transform: {
                '/tags/news': { stylesheet: 'ajatus2midgard.xsl', params: { 'topic-guid': TOPIC_NEWS } },
                '/tags/fragile': { stylesheet: 'fragile.xsl', params: { 'topic-guid': TOPIC_NEWS } },
              },
            },
          ],
          discoveryIntervalSeconds: 1,
        },
        transforms: { dir: '.' },
      },
    });
    hermodB = await site.hermod({ server: beta, name: 'site-b', extra: { appDb: { url: couch.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 }, transforms: { dir: '.' } } });
    await hermodA.waitForLog((l) => l.msg === 'listening for Midgard signals', 'A listening on its bus');
  });

  it('a Midgard article emitted on D-Bus at A arrives at B as an Ajatus note (midgard2ajatus.xsl), and its update updates the same note', async () => {
    const created = await readFile(path.join(FIXTURES, 'article-hello.xml'), 'utf8');
    await bus.emit(`${MGD}/midgard_article/create`, created);
    const id = `midgard-${ARTICLE}`;
    const atB = await eventually(() => getB(id), 'the note at B', 30_000);
    assert.equal((atB.value as { _type?: string })._type, 'note');
    assert.equal(field(atB, 'title'), 'Hello, world & all federated sites');
    assert.deepEqual(field(atB, 'tags'), ['from-midgard']);
    assert.equal((field(atB, 'source') as { guid: string }).guid, ARTICLE);
    assert.match(String(atB._rev), /^1-/);

    const updated = created
      .replace('action="created"', 'action="updated"')
      .replace('<title>Hello, world &amp; all federated sites</title>', '<title>Hello again</title>')
      .replace(/(<midgard_article [\s\S]*?)<revised>[^<]*<\/revised>/, '$1<revised>2026-11-24 13:00:00+0000</revised>');
    await bus.emit(`${MGD}/midgard_article/update`, updated);
    const after = await eventually(async () => {
      const doc = await getB(id);
      return field(doc, 'title') === 'Hello again' ? doc : undefined;
    }, 'the update at B', 30_000);
    assert.match(String(after._rev), /^2-/, 'the same note, one revision later');
    const { json } = await couch.request('GET', `${CONTENT}/_all_docs?startkey=%22midgard-%22&endkey=%22midgard-%EF%BF%BF%22`);
    assert.deepEqual((json as { rows: Array<{ id: string }> }).rows.map((r) => r.id), [id], 'one note for the article');
    // Imported, not published back: B's own source does not publish the note it wrote.
    const published = (await hermodB.log()).filter((l) => l.msg === 'published document' && l.doc === id);
    assert.deepEqual(published, []);
  });

  it('an Ajatus note at B arrives in A’s inbound spool as a midgard_article (ajatus2midgard.xsl), and its update hits the same object', async () => {
    const guid = md5('note-42');
    const rev = await couch.put(CONTENT, note('note-42', 'Plans for Q4', ['news'], '2026-11-25T10:00:00.000Z'));
    const first = await arrivedAtA(guid, () => true, 'the article in A’s inbound spool');
    assert.equal(first.main?.className, 'midgard_article');
    assert.equal(first.main?.fields.title, 'Plans for Q4');
    assert.equal(first.main?.fields.topic, TOPIC_NEWS);
    assert.equal(first.main?.metadata.revised, '2026-11-25 10:00:00+0000');

    await couch.put(CONTENT, { ...note('note-42', 'Plans for Q4, revised', ['news'], '2026-11-25T10:05:00.000Z'), _rev: rev });
    const second = await arrivedAtA(guid, (d) => d.main?.fields.title === 'Plans for Q4, revised', 'the update in A’s inbound spool');
    assert.equal(second.main?.guid, guid, 'the same Midgard object');
    assert.equal(second.main?.metadata.revised, '2026-11-25 10:05:00+0000');
  });

  it('a stylesheet that does not compile pauses only its subscription, with file, line and message, and the subscription resumes once it is fixed', async () => {
    const paused = await hermodB.waitForLog((l) => l.msg === 'subscription paused: its stylesheet does not compile' && l.node === '/site/news', 'the paused subscription at B', 30_000);
    assert.equal(paused.stylesheet, path.join(dir, 'broken.xsl'));
    assert.equal(paused.line, 4);
    assert.ok(String(paused.error).length > 0);
    const subscribed = (await hermodB.log()).filter((l) => l.msg === 'subscribed to partner node').map((l) => l.node);
    assert.ok(subscribed.includes('/midgard_article/all'), 'the other subscription runs');
    assert.ok(!subscribed.includes('/site/news'), 'the broken one is not subscribed');

    await copyFile(path.join(SHIPPED, 'midgard2ajatus.xsl'), path.join(dir, 'broken.xsl'));
    await hermodB.waitForLog((l) => l.msg === 'subscribed to partner node' && l.node === '/site/news', 'B subscribed to /site/news once the stylesheet compiles', 30_000);
  });

  it('a failing transform lands in the quarantine; `hermod quarantine retry` delivers it after the stylesheet is fixed', async () => {
    const configA = path.join(dir, 'site-a.json');
    await couch.put(CONTENT, note('note-fragile', 'Handle with care', ['fragile'], '2026-11-25T11:00:00.000Z'));
    const quarantined = await hermodA.waitForLog((l) => l.msg === 'leaf quarantined' && l.item === 'note-fragile', 'the leaf quarantined at A', 30_000);
    const listed = await hermodCli('quarantine', 'list', '--config', configA, '--json');
    assert.equal(listed.code, 0, listed.stderr);
    const entries = (JSON.parse(listed.stdout) as { entries: Array<{ id: string; node: string; itemId: string; reason: string; partner: string }> }).entries;
    assert.equal(entries.length, 1);
    assert.equal(entries[0]?.id, quarantined.id);
    assert.equal(entries[0]?.node, '/tags/fragile');
    assert.equal(entries[0]?.partner, beta.componentJid);
    assert.match(entries[0]?.reason ?? '', /this stylesheet is not finished/);
    const shown = await hermodCli('quarantine', 'show', String(quarantined.id), '--config', configA);
    assert.match(shown.stdout, /Handle with care/, 'show prints the leaf as received');
    assert.equal((await inbound()).some((f) => f.doc.main?.guid === md5('note-fragile')), false, 'nothing written yet');

    await copyFile(path.join(SHIPPED, 'ajatus2midgard.xsl'), path.join(dir, 'fragile.xsl'));
    const retried = await hermodCli('quarantine', 'retry', String(quarantined.id), '--config', configA);
    assert.equal(retried.code, 0, retried.stderr);
    const delivered = await arrivedAtA(md5('note-fragile'), () => true, 'the quarantined note in A’s spool');
    assert.equal(delivered.main?.fields.title, 'Handle with care');
    await eventually(async () => (await hermodCli('quarantine', 'list', '--config', configA)).stdout.includes('0 quarantined'), 'the quarantine empty');
    const unknown = await hermodCli('quarantine', 'retry', '00000000-0000-0000-0000-000000000000', '--config', configA);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no entry 00000000-0000-0000-0000-000000000000/);
  });
});
