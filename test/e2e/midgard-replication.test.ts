// Midgard replication end to end: site A's Hermod on Prosody (alpha.test) and site B's on
// ejabberd (beta.test), federating over s2s, each with its own private dbus-daemon on which the
// real dbus-send replays Midgard's Notified signals (object path, interface, member, signature
// exactly as midgard-core sends them). A publishes; B discovers A from a midgard_person carrying
// a JID and writes what arrives into its inbound spool for Midgard's importer. A blob of several
// MiB goes through XEP-0363 (Prosody's http_file_share at A) and lands in B's spool byte for byte;
// deleting the person (or its JID parameter) at B ends the partnership: B's subscriptions at A end.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import dbus from 'dbus-next';
import { canonical, parseMidgardXml, type MidgardDocument } from '../../src/codecs/midgard.ts';
import type { DbusDaemon, HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventually, OWNER } from './client.ts';
import { useSite } from './fixtures.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');
const ARTICLE = '29a8d8f0a9823c53fba2b3f96b59e8ec';
const MEETUP = '3aed637e8a34b41530207f196c092800';
const MGD = '/org/midgardproject/mgdschema';
const ADMIN = 'boss';

/**
 * Sends Notified(s) with dbus-next, as midgard-core does: for documents beyond what dbus-send
 * can take (one argv string is limited to 128 KiB). A call after it ensures the bus has it.
 */
async function emitLarge(address: string, objectPath: string, text: string): Promise<void> {
  const bus = dbus.sessionBus({ busAddress: address });
  try {
    bus.send(dbus.Message.newSignal(objectPath, 'org.midgardproject.notifier', 'Notified', 's', [text]));
    await bus.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId' }));
  } finally {
    bus.disconnect();
  }
}

/** The article's main object with changed metadata/fields, as Midgard would serialize the next version. */
function version(text: string, change: { revised?: string; approved?: string; isapproved?: boolean; action?: string; title?: string; deleted?: boolean }): string {
  return text.replace(/<midgard_article [\s\S]*?<\/midgard_article>/, (b) => {
    let out = b;
    if (change.revised) out = out.replace(/<revised>[^<]*<\/revised>/, `<revised>${change.revised}</revised>`);
    if (change.approved) out = out.replace(/<approved>[^<]*<\/approved>/, `<approved>${change.approved}</approved>`);
    if (change.action) out = out.replace(/action="[a-z]+"/, `action="${change.action}"`);
    if (change.title) out = out.replace(/<title>[^<]*<\/title>/, `<title>${change.title}</title>`);
    if (change.deleted) out = out.replace('<deleted>0</deleted>', '<deleted>1</deleted>');
    if (change.isapproved !== undefined) out = out.replace(/<isapproved>[^<]*<\/isapproved>/, `<isapproved>${change.isapproved ? 1 : 0}</isapproved>`);
    return out;
  });
}

/** Each object of a document, serialized canonically (attribute order is not kept by XMPP servers). */
const objects = (doc: MidgardDocument): string[] => doc.root.getChildElements().map((e) => canonical(e).toString());

describe('Midgard replication between two sites over D-Bus, XMPP s2s and the inbound spool', { timeout: 240_000 }, () => {
  const site = useSite({ name: 'midgard' });
  let dir: string;
  let alpha: ServerInfo;
  let beta: ServerInfo;
  let busA: DbusDaemon;
  let busB: DbusDaemon;
  let hermodA: HermodProcess;
  let hermodB: HermodProcess;
  let inboundB: string;
  let spoolA: string;

  const startA = (): Promise<HermodProcess> =>
    site.hermod({
      server: alpha,
      name: 'site-a',
      admins: [`${ADMIN}@${alpha.domain}`],
      extra: {
        midgard: {
          bus: busA.address,
          spool: './a-spool',
          inbound: './a-inbound',
          topicsExport: path.join(FIXTURES, 'topics-export.xml'),
          nodes: { paths: [{ node: '/site/news', regexp: '^/site/news/' }] },
          access: { '*': { access_model: 'whitelist', whitelist: [beta.componentJid] }, '/site/news': { access_model: 'open' } },
          discoveryIntervalSeconds: 1,
        },
      },
    });

  /** Files in B's inbound spool, parsed, in name (arrival) order. */
  const inbound = async (): Promise<Array<{ name: string; doc: MidgardDocument }>> => {
    const names = (await readdir(inboundB).catch(() => [] as string[])).filter((n) => n.endsWith('.xml') && !n.startsWith('.')).sort();
    return Promise.all(names.map(async (name) => ({ name, doc: parseMidgardXml(await readFile(path.join(inboundB, name), 'utf8')) })));
  };
  const arrived = (guid: string, check: (doc: MidgardDocument) => boolean, what: string): Promise<MidgardDocument> =>
    eventually(async () => (await inbound()).find((f) => f.doc.main?.guid === guid && check(f.doc))?.doc, what, 30_000);
  const publishedAt = async (h: HermodProcess, guid: string): Promise<Array<Record<string, unknown>>> => (await h.log()).filter((l) => l.msg === 'published midgard object' && l.guid === guid);
  /** A's log line for the publication of that version (logs reach the file a little after the work). */
  const publication = (guid: string, revised: string): Promise<Record<string, unknown>> =>
    hermodA.waitForLog((l) => l.msg === 'published midgard object' && l.guid === guid && l.revised === revised, `A's publication of ${guid} ${revised}`);

  before(async () => {
    dir = site.dir;
    [busA, busB] = await Promise.all([site.dbus('bus-a'), site.dbus('bus-b')]);
    alpha = site.alpha;
    beta = site.beta;
    inboundB = path.join(dir, 'b-inbound');
    spoolA = path.join(dir, 'a-spool');
    hermodA = await startA();
    hermodB = await site.hermod({
      server: beta,
      name: 'site-b',
      extra: { midgard: { bus: busB.address, inbound: './b-inbound', partnerJid: { parameter: 'org.openpsa.contacts/jid' }, discoveryIntervalSeconds: 1 } },
    });
    await hermodA.waitForLog((l) => l.msg === 'listening for Midgard signals', 'A listening on its bus');
    await hermodB.waitForLog((l) => l.msg === 'listening for Midgard signals', 'B listening on its bus');
    // B's Midgard knows alice at site A: a person with a JID parameter makes A's service a partner.
    await busB.emit(`${MGD}/midgard_person/create`, await fixture('person-alice.xml'));
    await hermodB.waitForLog((l) => l.msg === 'partner found' && l.jid === 'alice@alpha.test', 'B found its partner');
  });

  it('an article with two parameters and an attachment created at A reaches B identical; update, approval, a parameter change and deletion follow', async () => {
    const created = await fixture('article-hello.xml');
    await busA.emit(`${MGD}/midgard_article/create`, created);
    const atB = await arrived(ARTICLE, () => true, 'the article in B’s inbound spool');
    assert.deepEqual(objects(atB), objects(parseMidgardXml(created)), 'article, parameters, attachment and blob identical');
    assert.equal(Buffer.from(atB.blobs.get('e36f05a9761bb215fa749c04b58ccf21') ?? '', 'base64').toString(), 'Photo bytes: å ä ö');
    assert.deepEqual((await publication(ARTICLE, '2026-11-24 12:00:00+0000')).nodes, ['/midgard_article/all', '/site/news']);

    const updated = version(created, { action: 'updated', revised: '2026-11-24 13:00:00+0000', title: 'Hello again' });
    await busA.emit(`${MGD}/midgard_article/update`, updated);
    await arrived(ARTICLE, (d) => d.main?.fields.title === 'Hello again', 'the update at B');

    // midgard_object_approve sends no signal of its own: the next update carries the metadata.
    const approved = version(updated, { revised: '2026-11-24 13:05:00+0000', approved: '2026-11-24 13:05:00+0000', isapproved: true });
    await busA.emit(`${MGD}/midgard_article/update`, approved);
    await arrived(ARTICLE, (d) => d.main?.metadata.approved === '2026-11-24 13:05:00+0000', 'the approval at B');
    assert.deepEqual((await publication(ARTICLE, '2026-11-24 13:05:00+0000')).nodes, ['/midgard_article/all', '/midgard_article/approved', '/site/news']);

    // A parameter's own signal: the parent's item is published again with it.
    const param = `<?xml version="1.0"?>
<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8">
  <midgard_parameter guid="cb7324fbcace20882b6e872fca290d65" purge="no" action="updated">
    <domain>net.nehmer.blog</domain>
    <name>categories</name>
    <value>|xmpp|</value>
    <parentguid>${ARTICLE}</parentguid>
    <metadata>
      <revised>2026-11-24 13:10:00+0000</revised>
      <deleted>0</deleted>
    </metadata>
  </midgard_parameter>
</midgard_object>`;
    await busA.emit(`${MGD}/midgard_parameter/update`, param);
    const withParam = await arrived(ARTICLE, (d) => d.parameters.some((p) => p.fields.value === '|xmpp|'), 'the parameter change at B, with its parent');
    assert.deepEqual(withParam.parameters.map((p) => p.fields.value), ['default', '|xmpp|']);
    assert.equal(withParam.main?.metadata.approved, '2026-11-24 13:05:00+0000', 'the parent as last published');
    assert.equal(withParam.attachments.length, 1);

    // Unapproved (isapproved 0; approved and revised both set to now, as midgard_object_unapprove does) and edited.
    const edited = version(approved, { revised: '2026-11-24 13:15:00+0000', approved: '2026-11-24 13:15:00+0000', isapproved: false, title: 'Hello, edited' });
    await busA.emit(`${MGD}/midgard_article/update`, edited);
    const afterEdit = await arrived(ARTICLE, (d) => d.main?.fields.title === 'Hello, edited', 'the edit at B');
    assert.deepEqual(afterEdit.parameters.map((p) => p.fields.value), ['default', '|xmpp|'], 'children kept with the parent');
    assert.deepEqual((await publication(ARTICLE, '2026-11-24 13:15:00+0000')).retractedFrom, ['/midgard_article/approved'], 'unapproved: retracted from approved');

    await busA.emit(`${MGD}/midgard_article/delete`, version(edited, { action: 'deleted', revised: '2026-11-24 14:00:00+0000', deleted: true }));
    await arrived(ARTICLE, (d) => d.main?.action === 'deleted' && d.main.metadata.deleted === '1', 'the deletion (tombstone) at B');
    await hermodA.waitForLog((l) => l.msg === 'retracted midgard object' && l.guid === ARTICLE, 'retraction at A');
    const files = (await inbound()).filter((f) => f.doc.main?.guid === ARTICLE);
    const versions = files.map((f) => f.doc.root.getChildElements().map((e) => e.toString()).join());
    assert.deepEqual(versions, [...new Set(versions)], 'no version twice in the spool');
    assert.equal(files.length, 6, 'create, update, approval, parameter, edit, deletion');
  });

  it('a path node carries only articles under the matching topic', async () => {
    await busA.emit(`${MGD}/midgard_article/create`, await fixture('article-meetup.xml'));
    await arrived(MEETUP, () => true, 'the meetup at B');
    assert.deepEqual((await publication(MEETUP, '2026-11-24 14:00:00+0000')).nodes, ['/midgard_article/all'], 'not on /site/news');
    // Any XMPP user can read the open path node: only the news article was ever there.
    const reader = await site.user(beta, 'reader');
    try {
      const res = await reader.iq('get', alpha.componentJid, `<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='/site/news'/></pubsub>`);
      const ids = (res.getChild('pubsub')?.getChild('items')?.getChildren('item') ?? []).map((i) => i.attrs.id);
      assert.ok(!ids.includes(MEETUP));
    } finally {
      await reader.stop();
    }
  });

  it('malformed XML on the bus is logged and skipped; what follows is published', async () => {
    await busA.emit(`${MGD}/midgard_article/update`, await fixture('malformed.xml'));
    await hermodA.waitForLog((l) => l.msg === 'D-Bus signal skipped' && /not well-formed|guid/.test(String(l.reason)), 'malformed signal logged with the reason');
    await busA.emit(`${MGD}/midgard_article/update`, version(await fixture('article-meetup.xml'), { revised: '2026-11-24 15:00:00+0000', title: 'Meetup moved' }));
    await arrived(MEETUP, (d) => d.main?.fields.title === 'Meetup moved', 'the next signal still flows');
  });

  it('echo: what Midgard’s importer at B re-emits (replication path, or unchanged revised) is not published by B', async () => {
    const latest = (await inbound()).filter((f) => f.doc.main?.guid === MEETUP).at(-1) as { name: string };
    const text = await readFile(path.join(inboundB, latest.name), 'utf8');
    await busB.emit('/org/midgardproject/replication/midgard_article/import', text);
    await busB.emit(`${MGD}/midgard_article/update`, text);
    await eventually(async () => (await hermodB.log()).filter((l) => String(l.msg).startsWith('echo suppressed') && (l.guid === MEETUP || l.guid === undefined)).length >= 2, 'both echoes suppressed at B', 15_000);
    assert.equal((await publishedAt(hermodB, MEETUP)).length, 0, 'B published nothing it imported');
    // A local edit at B after the import is B's own change: published.
    await busB.emit(`${MGD}/midgard_article/update`, version(text, { revised: '2026-11-24 16:00:00+0000', title: 'Edited at B' }));
    await eventually(async () => (await publishedAt(hermodB, MEETUP)).length === 1, 'B publishes its own edit', 15_000);
  });

  it('the spool source at A survives a restart mid-directory: every file published once, moved to done/', async () => {
    await hermodA.stop();
    const guids = Array.from({ length: 30 }, (_, i) => `5b0c${String(i).padStart(4, '0')}aa11bb22cc33dd44ee55ff66`);
    const meetup = await fixture('article-meetup.xml');
    await mkdir(spoolA, { recursive: true });
    for (const [i, guid] of guids.entries()) {
      const text = meetup.replace(new RegExp(MEETUP, 'g'), guid).replace('<name>meetup</name>', `<name>spooled-${i}</name>`);
      // Written the way a watcher should: a temp name, then renamed into place.
      await writeFile(path.join(spoolA, `.${i}.tmp`), text);
      const { rename } = await import('node:fs/promises');
      await rename(path.join(spoolA, `.${i}.tmp`), path.join(spoolA, `${String(i).padStart(4, '0')}.xml`));
    }
    await writeFile(path.join(spoolA, '0100-bad.xml'), '<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><oops/></midgard_object>');
    hermodA = await startA();
    await hermodA.waitForLog((l) => l.msg === 'spool file done', 'A working through the spool');
    await hermodA.stop(); // mid-directory, most likely; the unit test pins that case down exactly
    hermodA = await startA();
    await eventually(async () => (await readdir(path.join(spoolA, 'done'))).length === guids.length, 'all files done', 60_000);
    assert.deepEqual((await readdir(path.join(spoolA, 'failed'))).sort(), ['0100-bad.xml', '0100-bad.xml.reason']);
    const published = (l: Record<string, unknown>): boolean => l.msg === 'published midgard object' && guids.includes(l.guid as string);
    await eventually(async () => new Set((await hermodA.log()).filter(published).map((l) => l.guid)).size === guids.length, 'every spooled object published', 15_000);
    const log = await hermodA.log();
    for (const guid of guids) assert.equal(log.filter((l) => l.msg === 'published midgard object' && l.guid === guid).length, 1, `${guid} published once`);
    await eventually(async () => (await inbound()).filter((f) => guids.includes(f.doc.main?.guid ?? '')).length === guids.length, 'all 30 at B', 30_000);
  });
  it('a blob of several MiB created on D-Bus at A goes through XEP-0363 and arrives byte for byte in B’s spool', async () => {
    const remap = (text: string): string => text.replace(/([0-9a-f]{32})/g, (g) => (g === '51bd22ef3b8b066c7e72680ab6ad8845' || g === '71140207f06e996d5c124d58e11fa3cd' || g === 'fa83d0e0993be44eec35447f63d4f8f6' ? g : `b16b${g.slice(4)}`));
    const BIG = `b16b${ARTICLE.slice(4)}`;
    const PHOTO = 'b16b05a9761bb215fa749c04b58ccf21';
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const text = remap(await fixture('article-hello.xml'))
      .replace('<name>hello-world</name>', '<name>big-photo</name>')
      .replace('<name>photo.jpg</name>', '<name>photo-large.jpg</name>')
      .replace(/(<midgard_blob guid="[0-9a-f]+">)[^<]*/, `$1${big.toString('base64')}`);
    await emitLarge(busA.address, `${MGD}/midgard_article/create`, text);
    const atB = await arrived(BIG, (d) => d.blobs.has(PHOTO), 'the article with its large blob in B’s inbound spool');
    assert.ok(Buffer.from(atB.blobs.get(PHOTO) ?? '', 'base64').equals(big), 'the same bytes');
    assert.deepEqual(objects(atB), objects(parseMidgardXml(text)), 'article, parameters, attachment and blob as Midgard wrote them');
    await hermodA.waitForLog((l) => l.msg === 'attachment uploaded' && l.guid === BIG && l.bytes === big.length, 'the upload at A');
    // What a reader of A's open /site/news node sees: a reference and an Atom enclosure, not 4 MiB of base64.
    const reader = await site.user(beta, 'reader2');
    try {
      const res = await reader.iq('get', alpha.componentJid, `<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='/site/news'><item id='${BIG}'/></items></pubsub>`);
      const entry = res.getChild('pubsub')?.getChild('items')?.getChild('item')?.getChildElements()[0];
      const blob = entry?.getChild('content')?.getChildElements()[0]?.getChildElements().find((e) => e.name === 'midgard_blob');
      assert.match(String(blob?.attrs.hermod_url), /^http:\/\//);
      assert.equal(blob?.attrs.length, String(big.length));
      assert.equal(blob?.getText(), '');
      const link = entry?.getChildren('link').find((l) => l.attrs.rel === 'enclosure');
      assert.equal(link?.attrs.href, blob?.attrs.hermod_url);
      assert.equal(link?.attrs.type, 'image/jpeg');
      assert.equal(link?.attrs.title, 'photo-large.jpg');
    } finally {
      await reader.stop();
    }
  });

  it('a blob signalled on D-Bus while A’s server is down waits for the upload service and reaches B once the server is back (not dropped with the signal)', async () => {
    const keep = new Set(['51bd22ef3b8b066c7e72680ab6ad8845', '71140207f06e996d5c124d58e11fa3cd', 'fa83d0e0993be44eec35447f63d4f8f6']);
    const remap = (text: string): string => text.replace(/([0-9a-f]{32})/g, (g) => (keep.has(g) ? g : `dead${g.slice(4)}`));
    const LATE = `dead${ARTICLE.slice(4)}`;
    const PHOTO = 'dead05a9761bb215fa749c04b58ccf21';
    const big = randomBytes(400 * 1024);
    const text = remap(await fixture('article-hello.xml'))
      .replace('<name>hello-world</name>', '<name>late-photo</name>')
      .replace('<name>photo.jpg</name>', '<name>photo-late.jpg</name>')
      .replace(/(<midgard_blob guid="[0-9a-f]+">)[^<]*/, `$1${big.toString('base64')}`);
    const online = (await hermodA.log()).filter((l) => l.msg === 'component online').length;
    await site.env.stopServer(alpha);
    try {
      await emitLarge(busA.address, `${MGD}/midgard_article/create`, text);
      const failed = await hermodA.waitForLog((l) => l.msg === 'document not published; will try again' && l.doc === LATE, 'the failed upload logged at A', 30_000);
      assert.match(String(failed.reason), /could not be uploaded/);
      await site.env.startServer(alpha);
      await eventually(async () => (await hermodA.log()).filter((l) => l.msg === 'component online').length > online, 'A online again', 60_000);
      const atB = await arrived(LATE, (d) => d.blobs.has(PHOTO), 'the article with its blob in B’s inbound spool');
      assert.ok(Buffer.from(atB.blobs.get(PHOTO) ?? '', 'base64').equals(big), 'the same bytes');
      await hermodA.waitForLog((l) => l.msg === 'document published after failed attempts' && l.doc === LATE, 'A logged the late publication');
    } finally {
      await site.env.startServer(alpha).catch(() => undefined); // a no-op when it runs
    }
  });

  it('deleting the midgard_person at B, or its JID parameter, ends the partnership: B’s subscriptions at A end', async () => {
    const boss = await site.user(alpha, ADMIN);
    /** Who is subscribed to A's /midgard_article/all, as its owner sees it. */
    const subscribers = async (): Promise<string[]> => {
      const res = await boss.iq('get', alpha.componentJid, `<pubsub xmlns='${OWNER}'><subscriptions node='/midgard_article/all'/></pubsub>`);
      return (res.getChild('pubsub', OWNER)?.getChild('subscriptions')?.getChildren('subscription') ?? []).map((sub) => String(sub.attrs.jid));
    };
    const removals = async (): Promise<Array<Record<string, unknown>>> => (await hermodB.log()).filter((l) => l.msg === 'partner removed' && l.jid === 'alice@alpha.test');
    const person = (revised: string, change: { action: string; deleted?: boolean; withParam: boolean }): Promise<string> =>
      fixture('person-alice.xml').then((t) => {
        let out = t.replace(/<revised>[^<]*<\/revised>/, `<revised>${revised}</revised>`).replace(/(<midgard_person [^>]*)action="[a-z]+"/, `$1action="${change.action}"`);
        if (change.deleted) out = out.replace('<deleted>0</deleted>', '<deleted>1</deleted>');
        return change.withParam ? out : out.replace(/<midgard_parameter[\s\S]*<\/midgard_parameter>/, '');
      });
    try {
      assert.ok((await subscribers()).includes(beta.componentJid), 'B follows A while alice is its partner');
      // Midgard signals the deleted person object on its own.
      await busB.emit(`${MGD}/midgard_person/delete`, await person('2026-11-25 08:00:00+0000', { action: 'deleted', deleted: true, withParam: false }));
      const removed = await eventually(async () => (await removals())[0], 'B ends the partnership', 15_000);
      assert.ok((removed.unsubscribed as string[]).includes(`${alpha.componentJid} /midgard_article/all`));
      assert.ok(!(await subscribers()).includes(beta.componentJid), 'B no longer subscribed at A');

      // The person back with its JID: a partner again, subscribed again.
      await busB.emit(`${MGD}/midgard_person/update`, await person('2026-11-25 09:00:00+0000', { action: 'updated', withParam: true }));
      await eventually(async () => (await subscribers()).includes(beta.componentJid), 'B subscribed at A again', 30_000);
      // Its JID parameter deleted (the parameter's own signal): the partnership ends again.
      const param = (await fixture('person-alice.xml')).match(/<midgard_parameter[\s\S]*<\/midgard_parameter>/)?.[0] ?? '';
      const deletedParam = param.replace('action="created"', 'action="deleted"').replace('</parentguid>', '</parentguid><metadata><revised>2026-11-25 10:00:00+0000</revised><deleted>1</deleted></metadata>');
      await busB.emit(`${MGD}/midgard_parameter/delete`, `<?xml version="1.0"?>\n<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8">\n  ${deletedParam}\n</midgard_object>`);
      await eventually(async () => (await removals()).length === 2, 'B ends the partnership again', 15_000);
      assert.ok(!(await subscribers()).includes(beta.componentJid), 'B no longer subscribed at A');
    } finally {
      await boss.stop();
    }
  });
});
