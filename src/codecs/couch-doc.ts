// CouchDB document <-> Atom entry (RFC 4287) for replication leaves. The entry carries what a
// feed reader shows (id, title, updated, author, one category per tag) and the whole document —
// revision history and inline attachments included — in a pluggable body:
//   json: an XEP-0335 JSON container <json xmlns='urn:xmpp:json:0'> (the default)
//   xml:  <content type='application/xml'> holding the XSLT 3.0 json-to-xml form of the document
//         (<map xmlns='http://www.w3.org/2005/xpath-functions'>…), ready for stylesheets.

import { Element } from 'ltx';

export const ATOM = 'http://www.w3.org/2005/Atom';
export const JSON_CONTAINER = 'urn:xmpp:json:0';
export const XPATH_FUNCTIONS = 'http://www.w3.org/2005/xpath-functions';
/** Our wrapper for the document's other leaf revisions (conflicts, tombstones). */
export const HERMOD_COUCHDB = 'urn:hermod:couchdb:0';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type CouchDoc = { _id: string; _rev: string; [key: string]: Json };

export interface EntryMeta {
  /** Atom id (an IRI), stable per document. */
  id: string;
  title: string;
  updated: string;
  author: string;
  tags: string[];
}

export interface DocCodec {
  readonly name: 'json' | 'xml';
  /** Adds the document body to an entry. */
  encode(entry: Element, doc: CouchDoc): void;
  /** Reads the document from an entry; undefined when the entry has no body of this codec. */
  decode(entry: Element): CouchDoc | undefined;
}

export const jsonCodec: DocCodec = {
  name: 'json',
  encode(entry, doc) {
    entry.c('content', { type: 'text' }).t(`CouchDB document ${doc._id} revision ${doc._rev}`);
    entry.c('json', { xmlns: JSON_CONTAINER }).t(JSON.stringify(doc));
  },
  decode(entry) {
    const container = entry.getChild('json', JSON_CONTAINER);
    return container ? (JSON.parse(container.getText()) as CouchDoc) : undefined;
  },
};

/** JSON value -> XSLT 3.0 json-to-xml element. */
export function jsonToXml(value: Json, key?: string): Element {
  const attrs = key === undefined ? {} : { key };
  if (value === null) return new Element('null', attrs);
  if (typeof value === 'boolean') return new Element('boolean', attrs).t(String(value));
  if (typeof value === 'number') return new Element('number', attrs).t(String(value));
  if (typeof value === 'string') return new Element('string', attrs).t(value);
  if (Array.isArray(value)) {
    const el = new Element('array', attrs);
    for (const v of value) el.cnode(jsonToXml(v));
    return el;
  }
  const el = new Element('map', attrs);
  for (const [k, v] of Object.entries(value)) el.cnode(jsonToXml(v, k));
  return el;
}

/** XSLT 3.0 json-to-xml element -> JSON value. Throws on anything else. */
export function xmlToJson(el: Element): Json {
  switch (el.name) {
    case 'null':
      return null;
    case 'boolean':
      return el.getText().trim() === 'true';
    case 'number': {
      const n = Number(el.getText());
      if (!Number.isFinite(n)) throw new Error(`not a number: ${el.getText()}`);
      return n;
    }
    case 'string':
      return el.getText();
    case 'array':
      return el.getChildElements().map(xmlToJson);
    case 'map': {
      const out: { [key: string]: Json } = {};
      for (const child of el.getChildElements()) {
        const key = child.attrs.key as string | undefined;
        if (key === undefined) throw new Error(`map entry <${child.name}/> without key`);
        out[key] = xmlToJson(child);
      }
      return out;
    }
    default:
      throw new Error(`unexpected element <${el.name}/> in json-to-xml data`);
  }
}

export const xmlCodec: DocCodec = {
  name: 'xml',
  encode(entry, doc) {
    const map = jsonToXml(doc);
    map.attrs.xmlns = XPATH_FUNCTIONS;
    entry.c('content', { type: 'application/xml' }).cnode(map);
  },
  decode(entry) {
    const map = entry.getChild('content')?.getChild('map', XPATH_FUNCTIONS);
    return map ? (xmlToJson(map) as CouchDoc) : undefined;
  },
};

export const CODECS: Record<DocCodec['name'], DocCodec> = { json: jsonCodec, xml: xmlCodec };

/**
 * `doc` is the winning revision (the body readers see); `otherLeaves` are the document's other
 * leaf revisions, carried so that replicas end with the same revision tree.
 */
export function buildEntry(doc: CouchDoc, meta: EntryMeta, codec: DocCodec, otherLeaves: CouchDoc[] = []): Element {
  const entry = new Element('entry', { xmlns: ATOM });
  entry.c('id').t(meta.id);
  entry.c('title').t(meta.title);
  entry.c('updated').t(meta.updated);
  entry.c('author').c('name').t(meta.author);
  for (const tag of meta.tags) entry.c('category', { term: tag });
  codec.encode(entry, doc);
  if (otherLeaves.length > 0) {
    const leaves = entry.c('leaves', { xmlns: HERMOD_COUCHDB });
    for (const leaf of otherLeaves) leaves.c('json', { xmlns: JSON_CONTAINER }).t(JSON.stringify(leaf));
  }
  return entry;
}

const checked = (doc: CouchDoc): CouchDoc => {
  if (typeof doc._id !== 'string' || typeof doc._rev !== 'string') throw new Error('document without _id or _rev');
  return doc;
};

/** Reads the revisions from an entry (winner first) with whichever codec it was written with. */
export function parseEntry(entry: Element): CouchDoc[] {
  if (!entry.is('entry', ATOM)) throw new Error(`payload is <${entry.name}/>, not an Atom entry`);
  for (const codec of Object.values(CODECS)) {
    const doc = codec.decode(entry);
    if (doc) {
      const others = (entry.getChild('leaves', HERMOD_COUCHDB)?.getChildren('json', JSON_CONTAINER) ?? []).map((j) => checked(JSON.parse(j.getText()) as CouchDoc));
      if (others.some((o) => o._id !== doc._id)) throw new Error('leaf revisions of another document');
      return [checked(doc), ...others];
    }
  }
  throw new Error('Atom entry carries no document (neither a JSON container nor json-to-xml content)');
}
