// The shipped stylesheets, run by the real engine on realistic leaves: a Midgard article becomes
// an Ajatus note (stable _id from the GUID); an Ajatus note becomes a midgard_article under the
// configured topic (stable GUID from the document id).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'ltx';
import { buildEntry, jsonCodec, xmlCodec, type CouchDoc } from '../../src/codecs/couch-doc.ts';
import { XsltEngine } from '../../src/transform/xslt.ts';

const engine = new XsltEngine();
after(() => engine.close());
const file = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));
const MGD = 'http://www.midgard-project.org/midgard_object/1.8';

const midgardLeaf = (): string => {
  const object = readFileSync(file('../fixtures/midgard/article-hello.xml'), 'utf8').replace(/^<\?xml[^>]*>\s*/, '');
  return `<entry xmlns="http://www.w3.org/2005/Atom"><id>urn:x</id><title>t</title><updated>2026-11-24T12:00:00Z</updated><content type="application/xml">${object}</content></entry>`;
};

const note: CouchDoc = {
  _id: 'note-42',
  _rev: '3-abc',
  _revisions: { start: 3, ids: ['abc', 'b', 'a'] },
  value: { _type: 'note', title: { val: 'Quarterly <plan>' }, content: { val: 'Body & soul' }, tags: { val: ['plans', 'q4'] }, metadata: { created: { val: '2026-11-20T08:00:00.000Z' }, revised: { val: '2026-11-24T13:05:09.000Z' }, deleted: { val: false } } },
};
const meta = { id: 'urn:n', title: 'Quarterly', updated: '2026-11-24T13:05:09.000Z', author: 'alice', tags: ['plans'] };

describe('shipped stylesheets', () => {
  it('midgard2ajatus: an article becomes a note with title, content, tags and dates', async () => {
    const sheet = await engine.compile(file('../../stylesheets/midgard2ajatus.xsl'));
    const out = await engine.transform(sheet, midgardLeaf(), { partner: 'pubsub.alpha.test', node: '/midgard_article/all', 'item-id': '29a8d8f0a9823c53fba2b3f96b59e8ec', publisher: 'pubsub.alpha.test', tags: '', 'topic-name': 'news' });
    const json = parse(out);
    assert.ok(json.is('json', 'urn:xmpp:json:0'));
    const doc = JSON.parse(json.getText()) as { _id: string; value: Record<string, { val: unknown }> };
    assert.equal(doc._id, 'midgard-29a8d8f0a9823c53fba2b3f96b59e8ec');
    assert.equal(doc.value.title?.val, 'Hello, world & all federated sites');
    assert.equal(doc.value.content?.val, '<p>Hermod carries this article, its <em>parameters</em> and its photo.</p>');
    assert.deepEqual(doc.value.tags?.val, ['midgard', 'news']);
    assert.equal((doc.value.metadata as unknown as Record<string, { val: unknown }>).revised?.val, '2026-11-24T12:00:00+00:00');
  });

  for (const codec of [jsonCodec, xmlCodec]) {
    it(`ajatus2midgard (${codec.name} leaf): a note becomes a midgard_article under the topic with a stable GUID`, async () => {
      const sheet = await engine.compile(file('../../stylesheets/ajatus2midgard.xsl'));
      const guid = createHash('md5').update('note-42').digest('hex');
      const leaf = buildEntry(note, meta, codec).toString();
      const out = parse(await engine.transform(sheet, leaf, { 'topic-guid': '51bd22ef3b8b066c7e72680ab6ad8845', 'item-guid': guid, partner: 'pubsub.beta.test', node: '/tags/plans', 'item-id': 'note-42', publisher: 'pubsub.beta.test' }));
      assert.ok(out.is('midgard_object', MGD));
      const article = out.getChild('midgard_article', MGD);
      assert.equal(article?.attrs.guid, guid);
      assert.equal(article?.getChildText('topic'), '51bd22ef3b8b066c7e72680ab6ad8845');
      assert.equal(article?.getChildText('title'), 'Quarterly <plan>');
      assert.equal(article?.getChildText('content'), 'Body & soul');
      assert.equal(article?.getChild('metadata')?.getChildText('revised'), '2026-11-24 13:05:09+0000');
      assert.equal(article?.getChild('metadata')?.getChildText('deleted'), '0');
    });
  }

  it('ajatus2midgard refuses to run without a topic', async () => {
    const sheet = await engine.compile(file('../../stylesheets/ajatus2midgard.xsl'));
    await assert.rejects(engine.transform(sheet, buildEntry(note, meta, jsonCodec).toString(), {}), /topic-guid parameter is required/);
  });
});
