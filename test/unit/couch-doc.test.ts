// The document codecs: both round-trip a CouchDB document (revisions, attachments, unicode,
// numbers, nulls) through an Atom entry serialized as text, and refuse what is not theirs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'ltx';
import { buildEntry, CODECS, parseEntry, type CouchDoc } from '../../src/codecs/couch-doc.ts';
import { PROFILES, tagsOf, isDeleted } from '../../src/replication/profile.ts';

const doc: CouchDoc = {
  _id: 'note-1',
  _rev: '2-b',
  _revisions: { start: 2, ids: ['b', 'a'] },
  value: { _type: 'note', title: { val: 'Ünïcode <&> "quotes"' }, tags: { val: ['x', 'y', 'x', ' ', 'a/b'] }, n: 1.5, nothing: null, flag: false, list: [1, 'two', { three: 3 }] },
  _attachments: { 'a.bin': { content_type: 'application/octet-stream', data: 'AAEC' } },
};
const meta = { id: 'urn:x', title: 'T', updated: '2026-11-25T00:00:00.000Z', author: 'alice', tags: ['x', 'y'] };

describe('document codecs', () => {
  for (const codec of Object.values(CODECS)) {
    it(`${codec.name}: round-trips a document through the Atom entry text`, () => {
      const text = buildEntry(doc, meta, codec).toString();
      const entry = parse(text);
      assert.equal(entry.getChildText('title'), 'T');
      assert.deepEqual(entry.getChildren('category').map((c) => c.attrs.term), ['x', 'y']);
      assert.deepEqual(parseEntry(entry), [doc]);
      const conflict = { ...doc, _rev: '2-c', _revisions: { start: 2, ids: ['c', 'a'] } };
      assert.deepEqual(parseEntry(parse(buildEntry(doc, meta, codec, [conflict]).toString())), [doc, conflict]);
    });
  }

  it('refuses a payload that is not an entry or carries no document', () => {
    assert.throws(() => parseEntry(parse('<foo xmlns="bar"/>')), /not an Atom entry/);
    assert.throws(() => parseEntry(parse('<entry xmlns="http://www.w3.org/2005/Atom"><title>x</title></entry>')), /carries no document/);
  });

  it('the ajatus profile reads tags (deduplicated, no empty or slash tags) and the deleted flag', () => {
    assert.deepEqual(tagsOf(doc, PROFILES.ajatus!), ['x', 'y']);
    assert.equal(isDeleted(doc, PROFILES.ajatus!), false);
    assert.equal(isDeleted({ ...doc, value: { metadata: { deleted: { val: true } } } }, PROFILES.ajatus!), true);
  });
});
