// Midgard replication without servers: the midgard_object codec and the approval rule on the
// hand-written fixtures, the node mapping and topic paths, the publisher against the in-process
// pub/sub service (create/update/approve/unapprove/delete, a child's change re-publishes the
// parent, echoes are not published), the inbound spool sink (atomic files, stale versions
// skipped), and the spool source surviving a restart mid-directory.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Element, parse } from 'ltx';
import {
  blobRefElement,
  buildMidgardEntry,
  isApproved,
  isDeleted,
  MidgardFormatError,
  parseMidgardDate,
  parseMidgardEntry,
  parseMidgardXml,
  replaceBlobs,
  serializeMidgard,
} from '../../src/codecs/midgard.ts';
import { Offloader, sha256, splitByBudget } from '../../src/replication/http-upload.ts';
import { readMidgardConfig } from '../../src/config/midgard-config.ts';
import { validateConfig } from '../../src/config/config.ts';
import { silentLogger } from '../../src/log.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { DEFAULT_MAPPING, nodesFor, objectPath, TopicIndex } from '../../src/replication/midgard-mapping.ts';
import { endOlderWaits, settleSignals } from '../../src/replication/midgard.ts';
import { BlobUploadError, MidgardPublisher, type MidgardInput } from '../../src/replication/midgard-publisher.ts';
import { PublishRetries } from '../../src/replication/publish-retries.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { MidgardSpoolSink } from '../../src/sinks/midgard-spool.ts';
import { MidgardSpoolSource, SpoolBatchError } from '../../src/sources/midgard-spool.ts';
import { parseNotifierPath } from '../../src/sources/midgard-dbus.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { captureLog } from './capture-log.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const fixture = (name: string): Promise<string> => readFile(path.join(FIXTURES, name), 'utf8');
export const ARTICLE = '29a8d8f0a9823c53fba2b3f96b59e8ec';
const NEWS = '51bd22ef3b8b066c7e72680ab6ad8845';

/** The article fixture with its main object's metadata/action changed (text edits, like Midgard would emit). */
export function articleVersion(text: string, change: { revised?: string; approved?: string; isapproved?: boolean; action?: string; title?: string; deleted?: boolean }): string {
  let out = text;
  const main = (s: string, f: (block: string) => string): string => s.replace(/<midgard_article [\s\S]*?<\/midgard_article>/, f);
  if (change.revised) out = main(out, (b) => b.replace(/<revised>[^<]*<\/revised>/, `<revised>${change.revised}</revised>`));
  if (change.approved) out = main(out, (b) => b.replace(/<approved>[^<]*<\/approved>/, `<approved>${change.approved}</approved>`));
  if (change.action) out = main(out, (b) => b.replace(/action="[a-z]+"/, `action="${change.action}"`));
  if (change.title) out = main(out, (b) => b.replace(/<title>[^<]*<\/title>/, `<title>${change.title}</title>`));
  if (change.deleted) out = main(out, (b) => b.replace(/<deleted>0<\/deleted>/, '<deleted>1</deleted>'));
  if (change.isapproved !== undefined) out = main(out, (b) => b.replace(/<isapproved>[^<]*<\/isapproved>/, `<isapproved>${change.isapproved ? 1 : 0}</isapproved>`));
  return out;
}

describe('midgard_object codec', () => {
  it('reads the article with two parameters, an attachment and its blob', async () => {
    const doc = parseMidgardXml(await fixture('article-hello.xml'));
    assert.equal(doc.main?.className, 'midgard_article');
    assert.equal(doc.main?.guid, ARTICLE);
    assert.equal(doc.main?.action, 'created');
    assert.equal(doc.main?.fields.topic, NEWS);
    assert.equal(doc.main?.fields.content, '<p>Hermod carries this article, its <em>parameters</em> and its photo.</p>');
    assert.equal(doc.main?.metadata.revision, '1');
    assert.deepEqual(doc.parameters.map((p) => [p.fields.domain, p.fields.name, p.fields.value]), [
      ['midcom.helper.datamanager2', 'schema_name', 'default'],
      ['net.nehmer.blog', 'categories', '|xmpp|replication|'],
    ]);
    assert.equal(doc.attachments[0]?.fields.mimetype, 'image/jpeg');
    assert.equal(Buffer.from(doc.blobs.get('e36f05a9761bb215fa749c04b58ccf21') ?? '', 'base64').toString(), 'Photo bytes: å ä ö');
    assert.equal(doc.main?.sitegroup, undefined);
  });

  it('reads a sitegroup when the object carries one (Midgard 1.x)', async () => {
    assert.equal(parseMidgardXml(await fixture('article-sitegroup.xml')).main?.sitegroup, 'intranet');
  });

  it('refuses malformed documents with the reason', async () => {
    assert.throws(() => parseMidgardXml(''), /empty document/);
    assert.throws(() => parseMidgardXml('<midgard_object xmlns="urn:other"><a guid="29a8d8f0a9823c53fba2b3f96b59e8ec"/></midgard_object>'), /namespace/);
    assert.throws(() => parseMidgardXml('<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><midgard_article guid="nope"/></midgard_object>'), /valid guid/);
    assert.throws(() => parseMidgardXml('<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"/>'), /holds no object/);
    assert.throws(() => parseMidgardXml('<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><midgard_article guid="29a8d8f0a9823c53fba2b3f96b59e8ec" action="exploded"/></midgard_object>'), /unknown action/);
    await assert.rejects(async () => parseMidgardXml(await fixture('malformed.xml')), (err: unknown) => err instanceof MidgardFormatError && /not well-formed|valid guid/.test(err.message));
  });

  it('a carriage return in content is written as a reference, so that it reaches the importer as it was (raw, XML reads it as a line feed)', async () => {
    const doc = parseMidgardXml((await fixture('article-meetup.xml')).replace('<revised>', '<revised>').replace(/<title>[^<]*<\/title>/, '<title>line one&#13;\nline two</title>'));
    const text = serializeMidgard(doc.root);
    assert.match(text, /line one&#13;\nline two/);
    assert.equal(parseMidgardXml(text).main?.element.getChildText('title'), 'line one\r\nline two');
  });

  it('parses Midgard datetimes (Y-m-d H:i:sO); zero dates are unset', () => {
    assert.equal(parseMidgardDate('2026-11-24 13:00:00+0000'), Date.parse('2026-11-24T13:00:00Z'));
    assert.equal(parseMidgardDate('2026-11-24 15:00:00+0200'), Date.parse('2026-11-24T13:00:00Z'));
    assert.equal(parseMidgardDate('0000-00-00 00:00:00+0000'), undefined);
    assert.equal(parseMidgardDate(''), undefined);
  });

  it('approval: Midgard’s isapproved flag; the dates only without it (Midgard 1.x)', async () => {
    const text = await fixture('article-hello.xml');
    const main = (t: string) => parseMidgardXml(t).main as NonNullable<ReturnType<typeof parseMidgardXml>['main']>;
    assert.equal(isApproved(main(text)), false, 'never approved');
    // midgard_object_approve: isapproved, approved = revised = now.
    const approved = articleVersion(text, { approved: '2026-11-24 13:00:00+0000', revised: '2026-11-24 13:00:00+0000', isapproved: true });
    assert.equal(isApproved(main(approved)), true);
    assert.equal(isApproved(main(articleVersion(approved, { revised: '2026-11-24 14:00:00+0000' }))), true, 'an update leaves Midgard’s flag as it is');
    // midgard_object_unapprove: also sets approved = revised = now, clears the flag.
    assert.equal(isApproved(main(articleVersion(approved, { approved: '2026-11-24 15:00:00+0000', revised: '2026-11-24 15:00:00+0000', isapproved: false }))), false, 'unapproved, whatever the dates');
    // Midgard 1.x serializations carry no isapproved: approved set and not older than revised.
    const legacy = text.replace(/\s*<isapproved>[^<]*<\/isapproved>/, '');
    assert.equal(isApproved(main(articleVersion(legacy, { approved: '2026-11-24 12:00:00+0000' }))), true, 'approved at revision time');
    assert.equal(isApproved(main(articleVersion(legacy, { approved: '2026-11-24 13:00:00+0000', revised: '2026-11-24 14:00:00+0000' }))), false, 'edited after approval');
    assert.equal(isDeleted(main(articleVersion(text, { action: 'deleted' }))), true);
    assert.equal(isDeleted(main(articleVersion(text, { deleted: true }))), true);
  });

  it('an Atom entry carries the document inline and reads back identical', async () => {
    const doc = parseMidgardXml(await fixture('article-hello.xml'));
    const entry = buildMidgardEntry(doc, { categories: ['/site/news/hello-world'] });
    const text = entry.toString();
    const back = parseMidgardEntry(parse(text) as Element);
    assert.equal(serializeMidgard(back.root), serializeMidgard(doc.root));
    const reparsed = parse(text) as Element;
    assert.equal(reparsed.getChildText('id'), `urn:hermod:midgard:${ARTICLE}`);
    assert.equal(reparsed.getChildText('title'), 'Hello, world & all federated sites');
    assert.equal(reparsed.getChildText('updated'), '2026-11-24T12:00:00.000Z');
    assert.deepEqual(reparsed.getChildren('category').map((c) => c.attrs.term), ['midgard_article', '/site/news/hello-world']);
    assert.equal(reparsed.getChild('content')?.attrs.type, 'application/xml');
  });

  it('a blob travels as a reference to an upload and back inline; bad references are refused with the reason', async () => {
    const doc = parseMidgardXml(await fixture('article-hello.xml'));
    const PHOTO = 'e36f05a9761bb215fa749c04b58ccf21';
    const bytes = Buffer.from(doc.blobs.get(PHOTO) as string, 'base64');
    const ref = { url: 'http://127.0.0.2:5280/upload/x/photo.jpg', length: bytes.length, sha256: sha256(bytes), contentType: 'image/jpeg' };
    const withRef = replaceBlobs(doc, new Map([[PHOTO, ref]]));
    assert.equal(withRef.blobs.size, 0);
    // Through an Atom entry, as a partner reads it.
    const read = parseMidgardEntry(parse(buildMidgardEntry(withRef).toString()) as Element);
    assert.deepEqual(read.blobRefs.get(PHOTO), ref);
    const inline = replaceBlobs(read, new Map([[PHOTO, bytes.toString('base64')]]));
    assert.equal(serializeMidgard(inline.root), serializeMidgard(doc.root), 'the document as Midgard wrote it');
    const bad = (attrs: Record<string, string>, text = ''): string => {
      const el = blobRefElement(PHOTO, ref);
      Object.assign(el.attrs, attrs);
      if (text) el.t(text);
      return withRef.root.toString().replace(blobRefElement(PHOTO, ref).toString(), el.toString());
    };
    assert.throws(() => parseMidgardXml(bad({ hermod_url: 'file:///etc/passwd' })), /hermod_url is not an http\(s\) URL/);
    assert.throws(() => parseMidgardXml(bad({ length: '-1' })), /no valid length/);
    assert.throws(() => parseMidgardXml(bad({ hermod_sha256: 'abc' })), /no valid hermod_sha256/);
    assert.throws(() => parseMidgardXml(bad({}, 'QUJD')), /both a reference and inline content/);
  });

  it('the inline budget keeps the smallest inline (shared with Ajatus)', () => {
    assert.deepEqual(splitByBudget([70, 10, 50, 30], (n) => n, 100), [70]);
    assert.deepEqual(splitByBudget([200], (n) => n, 100), [200]);
    assert.deepEqual(splitByBudget([40, 60], (n) => n, 100), []);
  });
});

describe('node mapping and topic paths', () => {
  it('builds paths from the topic tree (export file and notifications) and maps nodes', async () => {
    const index = new TopicIndex();
    assert.equal(index.loadExport(await fixture('topics-export.xml')), 3);
    const article = parseMidgardXml(await fixture('article-hello.xml')).main as NonNullable<ReturnType<typeof parseMidgardXml>['main']>;
    assert.equal(objectPath(article, index), '/site/news/hello-world');
    const unnamed = parseMidgardXml((await fixture('article-hello.xml')).replace(/<name>[^<]*<\/name>/, '<name></name>')).main as NonNullable<ReturnType<typeof parseMidgardXml>['main']>;
    assert.equal(objectPath(unnamed, index), `/site/news/${unnamed.guid}`, 'an empty name: the GUID, no path ending in /');
    const mapping = { ...DEFAULT_MAPPING, paths: [{ node: '/site/news', regexp: /^\/site\/news\// }] };
    assert.deepEqual(nodesFor(article, mapping, index), ['/midgard_article/all', '/site/news']);
    const meetup = parseMidgardXml(await fixture('article-meetup.xml')).main as NonNullable<ReturnType<typeof parseMidgardXml>['main']>;
    assert.deepEqual(nodesFor(meetup, mapping, index), ['/midgard_article/all'], 'an article under /site/events is not on the news path node');
    const legacy = parseMidgardXml(await fixture('article-sitegroup.xml')).main as NonNullable<ReturnType<typeof parseMidgardXml>['main']>;
    assert.deepEqual(nodesFor(legacy, mapping, index), ['/midgard_article/all', '/midgard_article/approved', '/sitegroup/intranet/midgard_article/all']);
    const unknownTopic = new TopicIndex();
    assert.equal(objectPath(article, unknownTopic), undefined, 'no path while the topic is unknown');
  });

  it('config: defaults, and errors naming the key', () => {
    const errors: string[] = [];
    const c = readMidgardConfig({}, '/etc/hermod', errors);
    assert.equal(errors.length, 0, errors.join("\n"));
    assert.equal(c?.bus, 'system');
    assert.equal(c?.inbound, '/etc/hermod/midgard-inbound');
    assert.deepEqual(c?.follow, ['^/(?!tags/)[^/]+/all$']);
    readMidgardConfig({ bus: 'tcp', nodes: { paths: [{ node: 'x', regexp: '(' }], approved: 'nope' }, access: { '*': { access_model: 'closed', whitelist: ['not a jid/'] } }, partnerJid: { parameter: 'jid' }, wat: 1 }, '/', errors);
    const base = { component: { jid: 'pubsub.a.test', secret: 's', server: 'xmpp://127.0.0.1:5347' } };
    assert.throws(() => validateConfig({ ...base, midgard: { discoveryIntervalSeconds: -1 } }, '/'), /midgard\.discoveryIntervalSeconds: must be a positive number, got -1/);
    assert.equal(c?.inlineBlobMax, 131072, 'as ajatus.inlineAttachmentMax');
    assert.throws(() => validateConfig({ ...base, midgard: { inlineBlobMax: 0 } }, '/'), /midgard\.inlineBlobMax: must be a positive number, got 0/);
    assert.throws(() => validateConfig({ ...base, midgard: { inlineBlobMax: '1M' } }, '/'), /midgard\.inlineBlobMax: must be a positive number, got "1M"/);
    assert.equal(validateConfig({ ...base, midgard: { inlineBlobMax: 4096 } }, '/').midgard?.inlineBlobMax, 4096);
    assert.ok(validateConfig({ ...base, midgard: { bus: 'session' } }, '/').midgard);
    for (const expected of [
      'midgard.wat: unknown key',
      'midgard.bus: must be "system", "session", "none" or a D-Bus address',
      'midgard.nodes.approved: must be false or a node template',
      'midgard.nodes.paths[0].node: must be a node id starting with "/", got "x"',
      'midgard.nodes.paths[0].regexp: not a valid regular expression',
      'midgard.access["*"].access_model: must be "whitelist" or "open", got "closed"',
      'midgard.access["*"].whitelist[0]: must be a bare JID',
      'midgard.partnerJid.parameter: must be "domain/name"',
    ]) assert.ok(errors.some((e) => e.startsWith(expected)), `missing: ${expected}\n${errors.join('\n')}`);
  });

  it('D-Bus object paths: mgdschema and replication areas', () => {
    assert.deepEqual(parseNotifierPath('/org/midgardproject/mgdschema/midgard_article/update'), { area: 'mgdschema', className: 'midgard_article', action: 'update' });
    assert.deepEqual(parseNotifierPath('/org/midgardproject/replication/midgard_article/import'), { area: 'replication', className: 'midgard_article', action: 'import' });
    assert.match(parseNotifierPath('/org/other/x') as string, /is not \/org\/midgardproject/);
  });
});

describe('publisher, sink and spool source', () => {
  let dir: string;
  let service: PubsubService;
  let state: ReplicationState;
  let publisher: MidgardPublisher;
  const partners: string[] = [];
  const gone: string[] = [];
  const ACTOR = 'pubsub.a.test';
  const items = async (node: string): Promise<string[]> => {
    try {
      return (await service.getItems(ACTOR, node)).map((i) => i.id);
    } catch {
      return [];
    }
  };
  const payloadOf = async (node: string, id: string): Promise<Element> => parse((await service.getItems(ACTOR, node, { ids: [id] } as never))[0]?.payload ?? '') as Element;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'hermod-midgard-unit-'));
    service = new PubsubService({ store: new MemoryStore(), admins: [ACTOR], mayCreateNodes: () => false, notifier: () => {} });
    await service.start();
    state = new ReplicationState(new MemoryStore().state('midgard'));
    await state.open();
    const index = new TopicIndex();
    publisher = new MidgardPublisher({
      service,
      actor: ACTOR,
      state,
      mapping: { ...DEFAULT_MAPPING, paths: [{ node: '/site/news', regexp: /^\/site\/news\// }] },
      access: () => ({ accessModel: 'whitelist', whitelist: ['pubsub.b.test'] }),
      index,
      partnerJid: { property: 'jid', parameter: { domain: 'org.openpsa.contacts', name: 'jid' } },
      log: silentLogger,
      onPartner: (jid) => partners.push(jid),
      onPartnerGone: (jid) => gone.push(jid),
    });
    for (const t of ['topic-site.xml', 'topic-news.xml', 'topic-events.xml']) await publisher.handle(await fixture(t), { source: 'dbus', area: 'mgdschema', action: 'create' });
  });

  after(async () => {
    await state?.close();
    await service?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('create, update, approve, unapprove, child change and delete reach the right nodes; a read notification publishes nothing', async () => {
    const text = await fixture('article-hello.xml');
    await publisher.handle(text, { source: 'dbus', area: 'mgdschema', action: 'create' });
    assert.deepEqual(await items('/midgard_article/all'), [ARTICLE]);
    assert.deepEqual(await items('/site/news'), [ARTICLE]);
    assert.deepEqual(await items('/midgard_article/approved'), []);
    assert.deepEqual((await service.getAffiliations(ACTOR, '/midgard_article/all')).get('pubsub.b.test'), 'member', 'access settings applied on creation');

    // Midgard does not signal approve/unapprove; the next update carries the metadata.
    const approved = articleVersion(text, { action: 'updated', revised: '2026-11-24 13:00:00+0000', approved: '2026-11-24 13:00:00+0000', isapproved: true });
    await publisher.handle(approved, { source: 'dbus', area: 'mgdschema', action: 'update' });
    assert.deepEqual(await items('/midgard_article/approved'), [ARTICLE]);

    const unapproved = articleVersion(approved, { revised: '2026-11-24 13:30:00+0000', approved: '2026-11-24 13:30:00+0000', isapproved: false });
    const publishedBefore = publisher.published;
    await publisher.handle(unapproved, { source: 'dbus', area: 'mgdschema', action: 'get' });
    assert.equal(publisher.published, publishedBefore, 'a read notification (action get) publishes nothing');
    assert.deepEqual(await items('/midgard_article/approved'), [ARTICLE]);

    const edited = articleVersion(unapproved, { revised: '2026-11-24 14:00:00+0000', title: 'Edited' });
    await publisher.handle(edited, { source: 'dbus', area: 'mgdschema', action: 'update' });
    assert.deepEqual(await items('/midgard_article/approved'), [], 'unapproved (isapproved 0, approved = revised): retracted from approved');

    // A parameter alone (its own signal) re-publishes the parent with the parameter merged in.
    const param = `<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><midgard_parameter guid="cb7324fbcace20882b6e872fca290d65" action="updated"><domain>net.nehmer.blog</domain><name>categories</name><value>|xmpp|</value><parentguid>${ARTICLE}</parentguid><metadata><revised>2026-11-24 15:00:00+0000</revised></metadata></midgard_parameter></midgard_object>`;
    await publisher.handle(param, { source: 'dbus', area: 'mgdschema', action: 'update' });
    const doc = parseMidgardEntry((await payloadOf('/midgard_article/all', ARTICLE)) as Element);
    assert.equal(doc.main?.fields.title, 'Edited');
    assert.deepEqual(doc.parameters.map((p) => p.fields.value), ['default', '|xmpp|']);
    assert.equal(doc.attachments.length, 1);
    assert.equal(doc.blobs.size, 1, 'the blob stays with its attachment');

    // An attachment alone, newer and without its blob (midgard-core's signal carries none): the
    // new fields replace the old, and the blob published before stays, so a partner reading the
    // item first still gets the content.
    const blobBefore = doc.blobs.get('e36f05a9761bb215fa749c04b58ccf21');
    const renamed = `<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><midgard_attachment guid="e36f05a9761bb215fa749c04b58ccf21" action="updated"><name>photo-2.jpg</name><title>A photo, renamed</title><mimetype>image/jpeg</mimetype><parentguid>${ARTICLE}</parentguid><metadata><revised>2026-11-24 15:10:00+0000</revised></metadata></midgard_attachment></midgard_object>`;
    await publisher.handle(renamed, { source: 'dbus', area: 'mgdschema', action: 'update' });
    const withRenamed = parseMidgardEntry((await payloadOf('/midgard_article/all', ARTICLE)) as Element);
    assert.deepEqual(withRenamed.attachments.map((a) => a.fields.name), ['photo-2.jpg']);
    assert.ok(blobBefore !== undefined && blobBefore.length > 0);
    assert.equal(withRenamed.blobs.get('e36f05a9761bb215fa749c04b58ccf21'), blobBefore, 'the stored blob kept');
    assert.deepEqual(withRenamed.parameters.map((p) => p.fields.value), ['default', '|xmpp|']);

    const published = publisher.published;
    await publisher.handle(param, { source: 'spool' });
    assert.equal(publisher.published, published, 'the same document again publishes nothing');

    await publisher.handle(articleVersion(edited, { action: 'deleted', revised: '2026-11-24 16:00:00+0000', deleted: true }), { source: 'dbus', area: 'mgdschema', action: 'delete' });
    assert.deepEqual(await items('/midgard_article/all'), []);
    assert.deepEqual(await items('/site/news'), []);
  });

  it('partners come from midgard_person objects carrying a JID parameter', async () => {
    await publisher.handle(await fixture('person-alice.xml'), { source: 'dbus', area: 'mgdschema', action: 'create' });
    assert.deepEqual(partners, ['alice@alpha.test']);
  });

  it('a person deleted, or whose JID parameter is deleted, ends the partnership; an update of the object alone does not', async () => {
    const alice = await fixture('person-alice.xml');
    const PERSON = '06bdf8bb65c1b502d7a991e66609127b';
    const person = (change: { revised: string; action?: string; deleted?: boolean }, withParam: boolean): string => {
      let text = alice.replace(/<revised>[^<]*<\/revised>/, `<revised>${change.revised}</revised>`);
      if (change.action) text = text.replace(/(<midgard_person [^>]*)action="[a-z]+"/, `$1action="${change.action}"`);
      if (change.deleted) text = text.replace('<deleted>0</deleted>', '<deleted>1</deleted>');
      return withParam ? text : text.replace(/<midgard_parameter[\s\S]*<\/midgard_parameter>/, '');
    };
    gone.length = 0;
    // Midgard signals the person object on its own: the JID parameter seen before still counts.
    await publisher.handle(person({ revised: '2026-11-20 08:00:00+0000', action: 'updated' }, false), { source: 'dbus', area: 'mgdschema', action: 'update' });
    assert.deepEqual(gone, []);
    // A second person with the same JID: deleting one keeps the partner.
    const bob = alice.replaceAll(PERSON, 'aa00f8bb65c1b502d7a991e66609127b').replace('71140207f06e996d5c124d58e11fa3ce', 'aa01f8bb65c1b502d7a991e66609127b');
    await publisher.handle(bob, { source: 'dbus', area: 'mgdschema', action: 'create' });
    await publisher.handle(person({ revised: '2026-11-21 08:00:00+0000', action: 'deleted', deleted: true }, false), { source: 'dbus', area: 'mgdschema', action: 'delete' });
    assert.deepEqual(gone, [], 'another person still carries alice@alpha.test');
    // The other person's JID parameter deleted (its own signal): no person carries the JID any more.
    const paramDeleted = `<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><midgard_parameter guid="aa01f8bb65c1b502d7a991e66609127b" purge="no" action="deleted"><domain>org.openpsa.contacts</domain><name>jid</name><value>alice@alpha.test</value><parentguid>aa00f8bb65c1b502d7a991e66609127b</parentguid><metadata><revised>2026-11-22 08:00:00+0000</revised><deleted>1</deleted></metadata></midgard_parameter></midgard_object>`;
    await publisher.handle(paramDeleted, { source: 'dbus', area: 'mgdschema', action: 'delete' });
    assert.deepEqual(gone, ['alice@alpha.test']);
    // Undeleted with its JID: a partner again.
    partners.length = 0;
    await publisher.handle(person({ revised: '2026-11-23 08:00:00+0000', action: 'updated' }, true), { source: 'dbus', area: 'mgdschema', action: 'update' });
    assert.deepEqual(partners, ['alice@alpha.test']);
  });

  it('midgard.access is applied to a node an earlier run created, on its first use in this run; an apply that failed is tried again at the next document', async () => {
    const text = await fixture('article-hello.xml');
    await publisher.handle(text, { source: 'dbus', area: 'mgdschema', action: 'create' }); // the node exists, pubsub.b.test a member
    // A restart with another whitelist in the config file, whose first apply meets a store that fails once.
    let failures = 1;
    const flaky = new Proxy(service, {
      get: (target, prop, receiver) =>
        prop === 'setAffiliations'
          ? (...args: Parameters<PubsubService['setAffiliations']>) => (failures-- > 0 ? Promise.reject(new Error('store write failed')) : target.setAffiliations(...args))
          : (Reflect.get(target, prop, receiver) as unknown),
    });
    const restarted = new MidgardPublisher({
      service: flaky,
      actor: ACTOR,
      state,
      mapping: { ...DEFAULT_MAPPING, paths: [{ node: '/site/news', regexp: /^\/site\/news\// }] },
      access: () => ({ accessModel: 'whitelist', whitelist: ['pubsub.c.test'] }),
      index: new TopicIndex(),
      partnerJid: { property: 'jid', parameter: { domain: 'org.openpsa.contacts', name: 'jid' } },
      log: silentLogger,
      onPartner: () => {},
    });
    await assert.rejects(restarted.handle(articleVersion(text, { revised: '2026-11-26 10:00:00+0000', title: 'Again' }), { source: 'dbus', area: 'mgdschema', action: 'update' }), /store write failed/);
    await restarted.handle(articleVersion(text, { revised: '2026-11-26 10:05:00+0000', title: 'Again, later' }), { source: 'dbus', area: 'mgdschema', action: 'update' });
    const members = await service.getAffiliations(ACTOR, '/midgard_article/all');
    assert.equal(members.get('pubsub.c.test'), 'member', 'the whitelist of this run applied');
    assert.equal(members.get('pubsub.b.test'), undefined, 'the one no longer listed removed');
  });

  it('a blob above inlineBlobMax with no upload service: nothing is published, the error says why (and is not logged twice)', async () => {
    const log = captureLog();
    const noUpload = new MidgardPublisher({
      service,
      actor: ACTOR,
      state,
      mapping: { ...DEFAULT_MAPPING, all: '/blobtest/{class}', approved: false, sitegroup: false, paths: [] },
      access: () => ({ accessModel: 'whitelist', whitelist: [] }),
      index: new TopicIndex(),
      partnerJid: { property: 'jid', parameter: undefined },
      log,
      onPartner: () => {},
      inlineBlobMax: 8,
      offloader: new Offloader(undefined, state, silentLogger, 'midgard.inlineBlobMax'),
    });
    const text = (await fixture('article-meetup.xml')).replace(/3aed637e8a34b41530207f196c092800/g, 'bb0d637e8a34b41530207f196c092800');
    const withBlob = text.replace(
      '</midgard_object>',
      `<midgard_attachment guid="bb1d637e8a34b41530207f196c092800" action="created"><name>big.bin</name><mimetype>application/octet-stream</mimetype><parentguid>bb0d637e8a34b41530207f196c092800</parentguid></midgard_attachment><midgard_blob guid="bb1d637e8a34b41530207f196c092800">${Buffer.alloc(64, 7).toString('base64')}</midgard_blob></midgard_object>`,
    );
    await assert.rejects(noUpload.handle(withBlob, { source: 'spool' }), (err: Error) => err instanceof BlobUploadError && /object bb0d637e8a34b41530207f196c092800 .*attachment bb1d637e8a34b41530207f196c092800 .*above midgard\.inlineBlobMax.*no upload service/.test(err.message));
    assert.deepEqual(await items('/blobtest/midgard_article'), [], 'not published without its blob');
    // The caller (the spool source, settleSignals) logs the outcome with this message: the publisher itself says nothing.
    assert.deepEqual(log.lines.filter((l) => l.level === 'error' || l.level === 'warn'), []);
  });

  it('the sink writes validated leaves atomically in arrival order and skips stale versions; the import echo is not published', async () => {
    const inbound = path.join(dir, 'inbound');
    const written: string[] = [];
    const sink = new MidgardSpoolSink({ dir: inbound, state, log: silentLogger, onWritten: (f) => written.push(f) });
    await sink.start();
    const meetupText = await fixture('article-meetup.xml');
    const leaf = (text: string, id = '3aed637e8a34b41530207f196c092800'): Element => new Element('item', { id }).cnode(buildMidgardEntry(parseMidgardXml(text))).up();
    assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(meetupText)), true);
    assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/approved', leaf(meetupText)), false, 'equal revised: skipped');
    assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(meetupText, ARTICLE)), false, 'item id must be the GUID');
    const newer = meetupText.replace('<revised>2026-11-24 14:00:00+0000</revised>', '<revised>2026-11-24 15:00:00+0000</revised>');
    assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(newer)), true);
    assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(meetupText)), false, 'older: skipped');
    const files = (await readdir(inbound)).sort();
    assert.deepEqual(files, ['000000000001-3aed637e8a34b41530207f196c092800.xml', '000000000002-3aed637e8a34b41530207f196c092800.xml']);
    assert.equal(written.length, 2);
    assert.equal(await readFile(path.join(inbound, files[1] as string), 'utf8'), serializeMidgard(parseMidgardXml(newer).root));

    // Midgard's importer re-emits the object: on the replication path, or as an update with the delivered revised.
    const before = publisher.published;
    await publisher.handle(newer, { source: 'dbus', area: 'replication', action: 'import' });
    await publisher.handle(newer, { source: 'dbus', area: 'mgdschema', action: 'update' });
    assert.equal(publisher.published, before, 'echo suppressed');
    await publisher.handle(newer.replace('<revised>2026-11-24 15:00:00+0000</revised>', '<revised>2026-11-24 16:00:00+0000</revised>'), { source: 'dbus', area: 'mgdschema', action: 'update' });
    assert.equal(publisher.published, before + 1, 'a local edit after the import is published');
  });

  it('a deleted topic stays out of the topic index after a restart (its record is not read back)', async () => {
    const events = await fixture('topic-events.xml');
    const guid = /guid="([0-9a-f]+)"/.exec(events)?.[1] as string;
    const restored = (): Promise<TopicIndex> => {
      const index = new TopicIndex();
      const again = new MidgardPublisher({ service, actor: ACTOR, state, mapping: DEFAULT_MAPPING, access: () => ({ accessModel: 'open', whitelist: [] }), index, partnerJid: { property: 'jid', parameter: { domain: 'org.openpsa.contacts', name: 'jid' } }, log: silentLogger, onPartner: () => undefined, onPartnerGone: () => undefined });
      return again.restore().then(() => index);
    };
    await publisher.flush(); // the records as the feeds write them after each batch
    assert.ok((await restored()).get(guid), 'known before');
    await publisher.handle(events.replace('action="created"', 'action="deleted"').replace(/<revised>[^<]*<\/revised>/, '<revised>2030-01-01 00:00:00+0000</revised>'), { source: 'dbus', area: 'mgdschema', action: 'delete' });
    await publisher.flush();
    assert.equal((await restored()).get(guid), undefined, 'not brought back by a restart');
    // Back as it was for the other tests.
    await publisher.handle(events.replace(/<revised>[^<]*<\/revised>/, '<revised>2031-01-01 00:00:00+0000</revised>'), { source: 'dbus', area: 'mgdschema', action: 'create' });
    await publisher.flush();
  });

  it('the sink skips a version older than the local object (dates compared across offsets), writes revised in UTC, and never records an older version as delivered', async () => {
    const own = new ReplicationState(new MemoryStore().state('midgard-sink'));
    await own.open();
    try {
      const inbound = path.join(dir, 'inbound-utc');
      const sink = new MidgardSpoolSink({ dir: inbound, state: own, log: silentLogger });
      await sink.start();
      const meetupText = await fixture('article-meetup.xml');
      const GUID = '3aed637e8a34b41530207f196c092800';
      const at = (revised: string): string => meetupText.replace('<revised>2026-11-24 14:00:00+0000</revised>', `<revised>${revised}</revised>`);
      const leaf = (text: string): Element => new Element('item', { id: GUID }).cnode(buildMidgardEntry(parseMidgardXml(text))).up();
      // The local object, as this site's publisher saw it: revised 14:00 UTC.
      await own.setRecord('doc', GUID, parseMidgardXml(meetupText).root.toString());
      assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(at('2026-11-24 14:30:00+0100'))), false, '13:30 UTC, older than the local 14:00: skipped (as text, "14:30" would pass)');
      assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(at('2026-11-24 15:30:00+0100'))), true, '14:30 UTC: newer');
      const [file] = (await readdir(inbound)).filter((f) => f.endsWith('.xml'));
      assert.match(await readFile(path.join(inbound, file as string), 'utf8'), /<revised>2026-11-24 14:30:00\+0000<\/revised>/, 'written in UTC');
      assert.equal(await own.record('in', GUID), '2026-11-24 14:30:00+0000');
      assert.equal(await sink.writeItem('pubsub.b.test', '/midgard_article/all', leaf(at('2026-11-24 14:20:00+0000'))), false, 'older than delivered');
      assert.equal(await own.record('in', GUID), '2026-11-24 14:30:00+0000', 'the delivered version does not move back');
    } finally {
      await own.close();
    }
  });

  it('the spool source processes files in order, survives a restart mid-directory, moves bad files to failed/ with the reason', async () => {
    const spool = path.join(dir, 'spool');
    const seen: string[] = [];
    const batches: string[][] = [];
    let release: (() => void) | undefined;
    const blocked = new Promise<void>((r) => (release = r));
    let reachedD: (() => void) | undefined;
    const atD = new Promise<void>((r) => (reachedD = r));
    const make = (handle: (text: string, file: string) => Promise<void>): { start(): Promise<void>; stop(): Promise<void> } => {
      const source = new MidgardSpoolSource({ dir: spool, log: silentLogger, pollMs: 50, isPermanent: (err) => err instanceof MidgardFormatError });
      const start = (): Promise<void> =>
        source.start(undefined, async ({ changes }) => {
          // As the Midgard feed does: every file of the batch handled, the failures named.
          batches.push(changes.map((c) => c.file));
          const errors = new Map<number, unknown>();
          for (const [i, { text, file }] of changes.entries()) await handle(text, file).catch((err: unknown) => errors.set(i, err));
          if (errors.size > 0) throw new SpoolBatchError(errors);
        });
      return { start, stop: () => source.stop() };
    };
    const { mkdir, utimes } = await import('node:fs/promises');
    await mkdir(spool, { recursive: true });
    const names = ['a.xml', 'b.xml', 'c.xml', 'd.xml'];
    for (const [i, name] of names.entries()) {
      await writeFile(path.join(spool, name), name === 'c.xml' ? '<broken' : `<x n="${name}"/>`);
      await utimes(path.join(spool, name), 1_700_000_000 + i, 1_700_000_000 + i);
    }
    const first = make(async (text, file) => {
      if (text === '<broken') throw new MidgardFormatError('not well-formed XML: Incomplete document');
      if (file === 'd.xml') {
        reachedD?.();
        await blocked; // Hermod stops while d.xml is under way: it must be handed over again
        throw new Error('store closed');
      }
      seen.push(file);
    });
    await first.start();
    await atD;
    const stopping = first.stop();
    release?.();
    await stopping;
    assert.deepEqual(seen, ['a.xml', 'b.xml']);
    assert.deepEqual(batches[0], names, 'the files waiting handed over as one batch, in order');
    assert.deepEqual((await readdir(spool)).filter((n) => n.endsWith('.xml')), ['d.xml'], 'd.xml is still waiting');
    const second = make(async (text, file) => {
      if (text === '<broken') throw new MidgardFormatError('not well-formed XML: Incomplete document');
      seen.push(file);
    });
    await second.start();
    for (let i = 0; i < 200 && (await readdir(path.join(spool, 'done'))).length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    await second.stop();
    assert.deepEqual(seen, ['a.xml', 'b.xml', 'd.xml'], 'each good file once, in order');
    assert.deepEqual((await readdir(path.join(spool, 'done'))).sort(), ['a.xml', 'b.xml', 'd.xml']);
    assert.deepEqual((await readdir(path.join(spool, 'failed'))).sort(), ['c.xml', 'c.xml.reason']);
    assert.match(await readFile(path.join(spool, 'failed', 'c.xml.reason'), 'utf8'), /not well-formed/);
  });

  it('the spool source: a batch rejected without saying which file failed is handed over again one file at a time', async () => {
    const spool = path.join(dir, 'spool-plain');
    const { mkdir, utimes } = await import('node:fs/promises');
    await mkdir(spool, { recursive: true });
    for (const [i, name] of ['a.xml', 'b.xml', 'c.xml'].entries()) {
      await writeFile(path.join(spool, name), name === 'b.xml' ? '<broken' : `<x n="${name}"/>`);
      await utimes(path.join(spool, name), 1_700_000_000 + i, 1_700_000_000 + i);
    }
    const batches: string[][] = [];
    const source = new MidgardSpoolSource({ dir: spool, log: silentLogger, pollMs: 50, isPermanent: (err) => err instanceof MidgardFormatError });
    await source.start(undefined, async ({ changes }) => {
      batches.push(changes.map((c) => c.file));
      for (const { text } of changes) if (text === '<broken') throw new MidgardFormatError('not well-formed XML');
    });
    for (let i = 0; i < 200 && (await readdir(path.join(spool, 'done'))).length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    await source.stop();
    assert.deepEqual(batches, [['a.xml', 'b.xml', 'c.xml'], ['a.xml'], ['b.xml'], ['c.xml']]);
    assert.deepEqual((await readdir(path.join(spool, 'done'))).sort(), ['a.xml', 'c.xml']);
    assert.deepEqual((await readdir(path.join(spool, 'failed'))).sort(), ['b.xml', 'b.xml.reason']);
  });

  it('the spool source: a file that keeps failing, not for its content, is tried again after doubling waits, new files arriving meanwhile; the files after it wait', async () => {
    const spool = path.join(dir, 'spool-backoff');
    const { mkdir, utimes } = await import('node:fs/promises');
    await mkdir(spool, { recursive: true });
    await writeFile(path.join(spool, 'a.xml'), '<x n="a"/>');
    await utimes(path.join(spool, 'a.xml'), 1_700_000_000, 1_700_000_000);
    const tries: number[] = [];
    const handled: string[] = [];
    const log = captureLog();
    const source = new MidgardSpoolSource({ dir: spool, log, pollMs: 10, retryFirstMs: 150, retryMaxMs: 300, isPermanent: (err) => err instanceof MidgardFormatError });
    await source.start(undefined, async ({ changes }) => {
      // As the Midgard feed does: the files handled, the failure named (the files after it are handed over again).
      if (changes[0]?.file === 'a.xml' && tries.push(Date.now()) <= 3) throw new SpoolBatchError(new Map([[0, new Error('store unavailable')]]));
      handled.push(...changes.map((c) => c.file));
    });
    // New files keep arriving while a.xml fails: each is a watcher event, none is handled before a.xml.
    for (let i = 0; i < 20 && tries.length < 3; i++) {
      await writeFile(path.join(spool, `n${i}.xml`), `<x n="${i}"/>`);
      await new Promise((r) => setTimeout(r, 40));
    }
    for (let i = 0; i < 200 && (await readdir(path.join(spool, 'done'))).length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    await source.stop();
    assert.equal(tries.length, 4, 'three failures, then the pass; not one try per poll or per new file');
    const gaps = tries.slice(1).map((t, i) => t - (tries[i] as number));
    assert.ok((gaps[0] as number) >= 140 && (gaps[1] as number) >= 290 && (gaps[2] as number) >= 290, `waits of 150, 300, 300 ms (at most retryMaxMs): ${gaps.join(', ')}`);
    assert.equal(handled[0], 'a.xml', 'the failing file still goes first');
    assert.ok(handled.length >= 2, 'the files after it follow');
    const failed = log.lines.filter((l) => l.msg === 'spool file failed; will retry');
    assert.deepEqual(failed.map((l) => [l.failures, l.retryInMs]), [[1, 150], [2, 300], [3, 300]]);
    assert.equal(log.lines.filter((l) => l.msg === 'spool file no longer failing').length, 1);
  });
});

describe('D-Bus documents that fail (signals are not replayed)', () => {
  it('one that may pass waits, a newer failed one of the object replacing it, and is handed over again after growing waits; a read of the object does not end the wait, a later version handled does; a refusal for good is skipped', async () => {
    const log = captureLog();
    const waiting = new PublishRetries<MidgardInput>({ feed: 'retry:midgard-dbus', log, firstMs: 20, maxMs: 1_000 });
    const skipped: string[] = [];
    const o = { waiting, isPermanent: (err: unknown) => err instanceof MidgardFormatError || (err instanceof BlobUploadError && err.refused), skip: (_i: number, reason: string) => void skipped.push(reason) };
    const input = (text: string, action = 'update'): MidgardInput => ({ text, origin: { source: 'dbus', area: 'mgdschema', action } });
    const v1 = await fixture('article-hello.xml');
    const v2 = articleVersion(v1, { revised: '2026-11-24 13:00:00+0000', title: 'Second' });
    const v3 = articleVersion(v1, { revised: '2026-11-24 14:00:00+0000', title: 'Third' });

    settleSignals([input(v1), input('<midgard_object><broken')], new Map<number, unknown>([[0, new BlobUploadError('blob could not be uploaded: no answer')], [1, new MidgardFormatError('not well-formed')]]), o);
    assert.deepEqual(skipped, ['not well-formed'], 'a malformed document is skipped');
    assert.equal(waiting.size, 1, 'the one whose blob was not uploaded waits');
    const second = input(v2);
    settleSignals([second], new Map<number, unknown>([[0, new Error('the store is failing')]]), o);
    assert.equal(waiting.size, 1, 'one entry per object: the newer document replaces the older');
    assert.ok(waiting.holds(ARTICLE, second));

    // Each retry fails again (the upload service still silent): handed over after 20, 40, 80 ms.
    const handed: Array<{ text: string; at: number }> = [];
    await waiting.start(undefined, async ({ changes }) => {
      for (const c of changes) handed.push({ text: c.text, at: Date.now() });
      settleSignals(changes, new Map(changes.map((_, i) => [i, new BlobUploadError('still no answer')] as const)), o);
    });
    try {
      for (const deadline = Date.now() + 5_000; handed.length < 3 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(handed.slice(0, 3).map((h) => h.text), [v2, v2, v2], 'the newer document is handed over, again while it fails');
      const [a, b, c] = handed.map((h) => h.at) as [number, number, number];
      assert.ok(c - b > b - a, `the waits grow (${b - a} ms, then ${c - b} ms)`);
      assert.deepEqual(log.lines.filter((l) => l.msg === 'document not published; will try again').map((l) => l.level).slice(0, 3), ['error', 'warn', 'warn']);

      settleSignals([input(v2, 'get')], new Map(), o);
      assert.equal(waiting.size, 1, 'a read of the object (action get) does not end the wait');
      settleSignals([input(v3)], new Map(), o);
      assert.equal(waiting.size, 0, 'a later version of the object was handled: the older one is not handed over after it');
      const count = handed.length;
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(handed.length, count, 'nothing handed over once the wait ended');

      settleSignals([input(v2)], new Map<number, unknown>([[0, new BlobUploadError('no answer')]]), o);
      settleSignals([input(v2)], new Map<number, unknown>([[0, new BlobUploadError('refused: file too large', true)]]), o);
      assert.equal(waiting.size, 0, 'a waiting document refused for good on its retry is not tried again');
      assert.deepEqual(skipped.slice(-1), ['refused: file too large']);
    } finally {
      await waiting.stop();
    }
  });

  it('a spool file handled ends the wait of a D-Bus version of its object only when it is not older (metadata/revised)', async () => {
    const waiting = new PublishRetries<MidgardInput>({ feed: 'retry:midgard-dbus', log: captureLog() });
    const v1 = await fixture('article-hello.xml');
    const v2 = articleVersion(v1, { revised: '2026-11-24 13:00:00+0000', title: 'Second' });
    const v3 = articleVersion(v1, { revised: '2026-11-24 14:00:00+0000', title: 'Third' });
    waiting.failed(undefined, ARTICLE, 'no answer', { text: v3, origin: { source: 'dbus', area: 'mgdschema', action: 'update' } });
    endOlderWaits(waiting, { text: v2, origin: { source: 'spool' } });
    assert.equal(waiting.size, 1, 'an older version from the spool (a file tried again) leaves the newer one waiting');
    endOlderWaits(waiting, { text: v3, origin: { source: 'spool' } });
    assert.equal(waiting.size, 0, 'the same version handled from the spool ends it');
  });

  it('what waits is bounded in bytes: a document beyond is skipped with an error, not kept', () => {
    const log = captureLog();
    const waiting = new PublishRetries<MidgardInput>({ feed: 'retry:midgard-dbus', log, size: (i) => i.text.length, maxBytes: 10_000 });
    const input = (guid: string, bytes: number): MidgardInput => ({ text: `<midgard_object xmlns='${'http://www.midgard-project.org/midgard_object/1.8'}'><midgard_article guid='${guid}' action='updated'><title>${'x'.repeat(bytes)}</title></midgard_article></midgard_object>`, origin: { source: 'dbus', area: 'mgdschema', action: 'update' } });
    assert.equal(waiting.failed(undefined, 'a', 'no answer', input('a', 6_000)), true);
    assert.equal(waiting.failed(undefined, 'b', 'no answer', input('b', 6_000)), false, 'beyond 10 000 bytes');
    assert.equal(waiting.size, 1);
    assert.ok(log.lines.some((l) => l.level === 'error' && l.doc === 'b'));
    assert.equal(waiting.failed(undefined, 'a', 'no answer', input('a', 7_000)), true, 'a newer one of the same object replaces the older within the bound');
  });
});
