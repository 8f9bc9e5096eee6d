// Midgard's replication XML (`<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8">`,
// as midgard_replicator_serialize and midgard-portable write it) <-> typed objects, and the Atom
// entry that carries one such document inline as `<content type="application/xml">`.
// One document holds an object plus its immediate children (midgard_parameter, midgard_attachment,
// midgard_blob). This module parses and validates; it does no I/O and knows no nodes.
// On the wire (never in a spool) a large blob may be a reference to an XEP-0363 upload instead of
// base64: `<midgard_blob guid="…" hermod_url="http…" length="…" hermod_sha256="…" content_type="…"/>`
// (the attribute names of Ajatus's attachment references); the receiving sink downloads, verifies
// and puts the bytes back inline before the importer sees the file.

import { createHash } from 'node:crypto';
import { Element, parse } from 'ltx';
import { ATOM } from './couch-doc.ts';

export const MIDGARD_NS = 'http://www.midgard-project.org/midgard_object/1.8';
export const PARAMETER = 'midgard_parameter';
export const ATTACHMENT = 'midgard_attachment';
export const BLOB = 'midgard_blob';
export const TOPIC = 'midgard_topic';
const CHILD_CLASSES = new Set([PARAMETER, ATTACHMENT]);
const ACTIONS = new Set(['created', 'updated', 'deleted', 'purged', 'none']);
/** midgard_is_guid: hex, 21 to 80 characters (Midgard 1.x GUIDs are 32, Midgard2 up to 80). */
const GUID_RE = /^[0-9a-f]{21,80}$/i;
const CLASS_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class MidgardFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MidgardFormatError';
  }
}

export interface MidgardObject {
  /** MgdSchema class name (the element name). */
  className: string;
  guid: string;
  action: string;
  purge: boolean;
  /** Property name -> text (links carry the target's GUID; "0" or empty means none). */
  fields: Record<string, string>;
  metadata: Record<string, string>;
  /** `parentguid` of parameters and attachments. */
  parentGuid: string | undefined;
  /** Midgard 1.x sitegroup (child element or attribute), when present and not 0. */
  sitegroup: string | undefined;
  element: Element;
}

export interface MidgardDocument {
  /** The `<midgard_object>` element. */
  root: Element;
  /** The object the document is about; undefined when it carries only children. */
  main: MidgardObject | undefined;
  parameters: MidgardObject[];
  attachments: MidgardObject[];
  /** Attachment GUID -> base64 content. */
  blobs: Map<string, string>;
  /** Attachment GUID -> where its blob was uploaded (a blob travelling by reference). */
  blobRefs: Map<string, BlobRef>;
}

/** A blob that travels as a reference to an XEP-0363 upload (same shape as http-upload's UploadRef). */
export interface BlobRef {
  url: string;
  length: number;
  /** SHA-256 of the bytes, base64. */
  sha256: string;
  contentType: string;
}

const SHA256_B64 = /^[A-Za-z0-9+/]{43}=$/;

/** The reference attributes of a `<midgard_blob>`, validated; undefined when the blob is inline. */
function readBlobRef(el: Element, where: string): BlobRef | undefined {
  const url = el.attrs.hermod_url as string | undefined;
  if (url === undefined) return undefined;
  const guid = String(el.attrs.guid);
  if (!/^https?:\/\/\S+$/.test(url)) throw new MidgardFormatError(`${where}: <midgard_blob guid="${guid}"> hermod_url is not an http(s) URL`);
  const length = Number(el.attrs.length);
  if (!/^\d+$/.test(String(el.attrs.length ?? '')) || !Number.isSafeInteger(length)) throw new MidgardFormatError(`${where}: <midgard_blob guid="${guid}"> reference has no valid length`);
  const sha256 = String(el.attrs.hermod_sha256 ?? '');
  if (!SHA256_B64.test(sha256)) throw new MidgardFormatError(`${where}: <midgard_blob guid="${guid}"> reference has no valid hermod_sha256 (base64 SHA-256)`);
  if (el.getText().trim() !== '') throw new MidgardFormatError(`${where}: <midgard_blob guid="${guid}"> has both a reference and inline content`);
  return { url, length, sha256, contentType: String(el.attrs.content_type ?? 'application/octet-stream') };
}

/** The `<midgard_blob>` element carrying a reference instead of the bytes. */
export function blobRefElement(guid: string, ref: BlobRef): Element {
  return new Element(BLOB, { guid, hermod_url: ref.url, length: String(ref.length), hermod_sha256: ref.sha256, content_type: ref.contentType });
}

/**
 * A copy of the document with some blobs replaced: by a reference element (`BlobRef`) or by
 * base64 bytes (a string: the blob inline again, as the importer expects). Others are unchanged.
 */
export function replaceBlobs(doc: MidgardDocument, replacements: Map<string, BlobRef | string>): MidgardDocument {
  const root = new Element('midgard_object', { xmlns: MIDGARD_NS });
  for (const child of doc.root.children) {
    if (typeof child === 'string') {
      root.t(child); // the whitespace between objects, as written
      continue;
    }
    const el = child as Element;
    const guid = String(el.attrs.guid).toLowerCase();
    const r = el.name === BLOB ? replacements.get(guid) : undefined;
    if (r === undefined) root.cnode(clone(el));
    else if (typeof r === 'string') root.c(BLOB, { guid: el.attrs.guid as string }).t(r);
    else root.cnode(blobRefElement(el.attrs.guid as string, r));
  }
  return readMidgardElement(root);
}

export const isGuid = (s: string | undefined): s is string => typeof s === 'string' && GUID_RE.test(s);

/** A link property's target GUID, or undefined for "0"/empty. */
export function linkGuid(value: string | undefined): string | undefined {
  const v = value?.trim();
  return v && v !== '0' && isGuid(v) ? v.toLowerCase() : undefined;
}

/** Midgard datetime `Y-m-d H:i:sO` (or ISO 8601) -> epoch ms; undefined when empty/zero/invalid. */
export function parseMidgardDate(value: string | undefined): number | undefined {
  const v = value?.trim();
  if (!v || v.startsWith('0000-00-00') || v.startsWith('0001-01-01')) return undefined;
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?$/.exec(v);
  if (!m) return undefined;
  const zone = m[3] === undefined || m[3] === 'Z' ? 'Z' : m[3].includes(':') ? m[3] : `${m[3].slice(0, 3)}:${m[3].slice(3)}`;
  const t = Date.parse(`${m[1]}T${m[2]}${zone}`);
  return Number.isNaN(t) ? undefined : t;
}

/** A Midgard datetime (`Y-m-d H:i:sO`) in UTC, `+0000`, for epoch ms: one spelling per instant, so that text order is time order. */
export function formatMidgardDate(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')}+0000`;
}

/**
 * The approval rule, as midgard-core (`midgard_object_is_approved`, `midgard_object_approve`/
 * `unapprove` in midgard_object.c) and midgard-portable (`mgdobject::is_approved`) define it: the
 * boolean `metadata/isapproved`. Approving sets it with `approved` (core: also `revised`) to now;
 * unapproving clears it and also sets `approved` to now — so the dates cannot tell the two apart;
 * an ordinary update leaves the flag as it is. Serializations without `isapproved` (Midgard 1.x)
 * fall back to MidCOM's older rule: `approved` set and not older than `revised`.
 */
export function isApproved(obj: MidgardObject): boolean {
  const flag = obj.metadata.isapproved?.trim().toLowerCase();
  if (flag !== undefined && flag !== '') return flag === '1' || flag === 'true';
  const approved = parseMidgardDate(obj.metadata.approved);
  if (approved === undefined) return false;
  const revised = parseMidgardDate(obj.metadata.revised);
  return revised === undefined || approved >= revised;
}

/** Deleted or purged: by action, purge flag or `metadata/deleted`. */
export function isDeleted(obj: MidgardObject): boolean {
  const flag = obj.metadata.deleted?.trim().toLowerCase();
  return obj.action === 'deleted' || obj.action === 'purged' || obj.purge || flag === '1' || flag === 'true';
}

/** `metadata/revised` as written (compared as a date by callers). */
export const revisedOf = (obj: MidgardObject): string => obj.metadata.revised?.trim() ?? '';

/** What identifies a version of an object: its metadata/revised, else its whole serialization. */
export const versionOf = (obj: { metadata: Record<string, string>; element: Element }): string => revisedOf(obj as MidgardObject) || `#${createHash('sha256').update(obj.element.toString()).digest('hex')}`;

/** Every object of a document with its version (blobs by content). */
export function versionsOf(doc: MidgardDocument): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (doc.main) out.push([doc.main.guid, versionOf(doc.main)]);
  for (const c of [...doc.parameters, ...doc.attachments]) out.push([c.guid, versionOf(c)]);
  return out;
}

function readObject(el: Element, where: string): MidgardObject {
  const className = el.name;
  if (!CLASS_RE.test(className)) throw new MidgardFormatError(`${where}: <${className}> is not an MgdSchema class name`);
  const guid = el.attrs.guid as string | undefined;
  if (!isGuid(guid)) throw new MidgardFormatError(`${where}: <${className}> has no valid guid attribute (got ${JSON.stringify(guid ?? null)})`);
  const action = (el.attrs.action as string | undefined) ?? 'none';
  if (!ACTIONS.has(action)) throw new MidgardFormatError(`${where}: <${className} guid="${guid}"> has unknown action ${JSON.stringify(action)}`);
  const fields: Record<string, string> = {};
  const metadata: Record<string, string> = {};
  for (const child of el.getChildElements()) {
    if (child.name === 'metadata') {
      for (const m of child.getChildElements()) metadata[m.name] = m.getText();
    } else {
      fields[child.name] = child.getText();
    }
  }
  const sg = (el.attrs.sitegroup as string | undefined) ?? fields.sitegroup;
  const parent = fields.parentguid?.trim();
  if (CHILD_CLASSES.has(className) && !isGuid(parent)) throw new MidgardFormatError(`${where}: <${className} guid="${guid}"> has no valid parentguid`);
  return {
    className,
    guid: guid.toLowerCase(),
    action,
    purge: el.attrs.purge === 'yes',
    fields,
    metadata,
    parentGuid: parent ? parent.toLowerCase() : undefined,
    sitegroup: sg && sg.trim() !== '' && sg.trim() !== '0' ? sg.trim() : undefined,
    element: el,
  };
}

/** Validates a `<midgard_object>` element. Throws MidgardFormatError naming the problem. */
export function readMidgardElement(root: Element): MidgardDocument {
  if (root.name !== 'midgard_object') throw new MidgardFormatError(`root element is <${root.name}>, expected <midgard_object>`);
  if (root.getNS() !== MIDGARD_NS) throw new MidgardFormatError(`<midgard_object> namespace is ${JSON.stringify(root.getNS() ?? null)}, expected ${MIDGARD_NS}`);
  let main: MidgardObject | undefined;
  const parameters: MidgardObject[] = [];
  const attachments: MidgardObject[] = [];
  const blobs = new Map<string, string>();
  const blobRefs = new Map<string, BlobRef>();
  root.getChildElements().forEach((el, i) => {
    const where = `object ${i + 1}`;
    if (el.name === BLOB) {
      const guid = el.attrs.guid as string | undefined;
      if (!isGuid(guid)) throw new MidgardFormatError(`${where}: <midgard_blob> has no valid guid attribute`);
      const ref = readBlobRef(el, where);
      if (ref) return void blobRefs.set(guid.toLowerCase(), ref);
      const data = el.getText().replace(/\s+/g, '');
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(data)) throw new MidgardFormatError(`${where}: <midgard_blob guid="${guid}"> is not base64`);
      blobs.set(guid.toLowerCase(), data);
      return;
    }
    const obj = readObject(el, where);
    if (obj.className === PARAMETER) parameters.push(obj);
    else if (obj.className === ATTACHMENT) attachments.push(obj);
    else if (main) throw new MidgardFormatError(`${where}: a second main object <${obj.className} guid="${obj.guid}"> (the first is <${main.className} guid="${main.guid}">)`);
    else main = obj;
  });
  if (!main && parameters.length === 0 && attachments.length === 0) throw new MidgardFormatError('<midgard_object> holds no object');
  if (main) {
    for (const child of [...parameters, ...attachments]) {
      if (child.parentGuid !== main.guid) throw new MidgardFormatError(`<${child.className} guid="${child.guid}"> has parentguid ${child.parentGuid}, not the main object ${main.guid}`);
    }
  }
  for (const guid of [...blobs.keys(), ...blobRefs.keys()]) {
    if (!attachments.some((a) => a.guid === guid)) throw new MidgardFormatError(`<midgard_blob guid="${guid}"> has no <midgard_attachment> in the document`);
  }
  return { root, main, parameters, attachments, blobs, blobRefs };
}

/** Parses serialized text (as sent on D-Bus or dropped in a spool). */
export function parseMidgardXml(text: string): MidgardDocument {
  if (text.trim() === '') throw new MidgardFormatError('empty document');
  let root: Element;
  try {
    root = parse(text) as Element;
  } catch (err) {
    throw new MidgardFormatError(`not well-formed XML: ${(err as Error).message}`);
  }
  return readMidgardElement(root);
}

/**
 * The same element with attributes in a fixed order (xmlns first, then by name). XML servers do
 * not keep attribute order (Prosody holds attributes in a Lua table), so Hermod writes this form.
 */
export function canonical(el: Element): Element {
  const attrs: Record<string, unknown> = {};
  for (const name of Object.keys(el.attrs).sort((a, b) => (a === 'xmlns' ? -1 : b === 'xmlns' ? 1 : a < b ? -1 : a > b ? 1 : 0))) attrs[name] = el.attrs[name];
  const out = new Element(el.name, attrs as Record<string, string>);
  for (const child of el.children) out.children.push(typeof child === 'string' ? child : canonical(child as Element));
  for (const child of out.children) if (typeof child !== 'string') (child as Element).parent = out;
  return out;
}

/** The canonical serialization Hermod writes to spools: an XML declaration and the canonical document. */
export function serializeMidgard(root: Element): string {
  // A carriage return is written as a reference: raw, an XML parser reads it as a line feed
  // (and one in an attribute as a space), which would change CRLF content on the partner.
  return `<?xml version="1.0" encoding="UTF-8"?>\n${canonical(root).toString().replace(/\r/g, '&#13;')}\n`;
}

/**
 * A document for `main` with the given children: children of the same GUID are replaced by the
 * newer copy (the order of first appearance is kept), blobs travel with their attachment.
 */
export function composeDocument(main: Element, children: Element[]): Element {
  const root = new Element('midgard_object', { xmlns: MIDGARD_NS });
  root.cnode(clone(main));
  for (const child of children) root.cnode(clone(child));
  return readMidgardElement(root).root;
}

export function clone(el: Element): Element {
  return parse(el.toString()) as Element;
}

/** The immediate children of a document as elements, blobs right after their attachment. */
export function childElements(doc: MidgardDocument): Element[] {
  const out: Element[] = [];
  for (const p of doc.parameters) out.push(p.element);
  for (const a of doc.attachments) {
    out.push(a.element);
    const blob = doc.root.getChildElements().find((e) => e.name === BLOB && (e.attrs.guid as string).toLowerCase() === a.guid);
    if (blob) out.push(blob);
  }
  return out;
}

export interface MidgardEntryMeta {
  title?: string;
  /** Atom categories, e.g. the class and the object's path. */
  categories?: string[];
  /** Extra elements after the content, e.g. `link rel="enclosure"` for uploaded blobs. */
  links?: Element[];
}

/** Atom entry: id urn:hermod:midgard:<guid>, the document inline as application/xml content. */
export function buildMidgardEntry(doc: MidgardDocument, meta: MidgardEntryMeta = {}): Element {
  const main = doc.main;
  if (!main) throw new MidgardFormatError('an entry needs a main object');
  const entry = new Element('entry', { xmlns: ATOM });
  entry.c('id').t(`urn:hermod:midgard:${main.guid}`);
  entry.c('title').t(meta.title ?? main.fields.title ?? main.fields.name ?? main.guid);
  const revised = parseMidgardDate(main.metadata.revised) ?? parseMidgardDate(main.metadata.created);
  entry.c('updated').t(new Date(revised ?? Date.now()).toISOString());
  entry.c('author').c('name').t(main.metadata.revisor || main.metadata.creator || 'unknown');
  for (const term of [main.className, ...(meta.categories ?? [])]) entry.c('category', { term });
  entry.c('content', { type: 'application/xml' }).cnode(clone(doc.root));
  for (const link of meta.links ?? []) entry.cnode(link);
  return entry;
}

/** Reads the document from an entry; throws MidgardFormatError when there is none or it is invalid. */
export function parseMidgardEntry(entry: Element): MidgardDocument {
  if (entry.name !== 'entry' || entry.getNS() !== ATOM) throw new MidgardFormatError(`payload is <${entry.name}>, expected an Atom <entry>`);
  const content = entry.getChild('content');
  if (!content || content.attrs.type !== 'application/xml') throw new MidgardFormatError('entry has no <content type="application/xml">');
  const root = content.getChildElements()[0];
  if (!root) throw new MidgardFormatError('entry content is empty');
  const doc = readMidgardElement(clone(root));
  if (!doc.main) throw new MidgardFormatError('entry document has no main object');
  return doc;
}
