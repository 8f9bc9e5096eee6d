// Packed payloads: Hermod's subscription option `{urn:hermod:pubsub:0}packed` (SubscriptionOptions.packed).
//
// An item notification to a subscriber that asked for it carries each payload as the base64 of
// the payload's serialized XML (UTF-8), as the item's only content:
//   <item id='…' publisher='…'>PGVudHJ5IHhtbG5zPSJodHRwOi8v…</item>
// — exactly what a subscriber without the option gets inside <item/>, encoded. Why: the XMPP
// servers between two Hermods parse and re-serialise every element, attribute and text piece of
// every copy, and each `"` of a JSON payload travels as `&quot;`, which expat hands to Prosody's
// Lua one callback at a time (docs/PERFORMANCE.md, session 15: ~130 pieces per Ajatus document).
// Packed, a payload is one text node without entities: at four partners Prosody's CPU per
// document halved (session 17).
// Why text and not an element of our own: an item without child elements is XEP-0060's
// notification without payload (§7.1.2.2), which every receiver handles by fetching the item
// (§6.5.8) — an older Hermod after a downgrade, or another member of a cluster during a rolling
// upgrade, that finds its subscription still packed fetches each item and writes the right
// document; an unknown child element would have been taken for the payload and skipped.
// Why base64 and not compression: compressing documents of several authors together leaks
// through lengths (the reason stream compression, XEP-0138, was deprecated).
// Only notifications are packed; items and history requests (§6.5, XEP-0313) answer in plain
// XEP-0060 form. Payloads above PACK_MAX_CHARS go plain (their markup is a small share of their
// bytes, and base64 would grow a large stanza by a third).

import type { Element } from 'ltx';
import { NS } from './ns.ts';
import { refusal, StreamParser } from './parser.ts';
import { RawXml } from './raw.ts';
import type { Item } from '../pubsub/types.ts';

/** Payloads longer than this (characters of serialized XML) are sent plain even to packed subscribers: 64 Ki. */
export const PACK_MAX_CHARS = 64 * 1024;

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Base64 text -> bytes; throws when it is not base64 (whitespace aside). Node's decoder skips
 * what is not in the alphabet, so a text with anything else decodes to fewer bytes than its
 * length says: one native pass instead of a regular expression over every payload.
 */
function base64Bytes(text: string): Buffer {
  for (const t of [text, text.replace(/\s+/g, '')]) {
    const pad = t.endsWith('==') ? 2 : t.endsWith('=') ? 1 : 0;
    const bytes = Buffer.from(t, 'base64');
    if (t.length % 4 === 0 && bytes.length === (t.length / 4) * 3 - pad) return bytes;
  }
  throw new Error('not base64');
}

/** Each item's encoding, made once however many recipients and digests carry it (the Item objects of an event are shared by them). */
const encoded = new WeakMap<Item, RawXml>();

/** Whether `item`'s payload travels packed to a subscriber that asked for it (non-empty, at most PACK_MAX_CHARS). */
export function packable(item: Item): boolean {
  return item.payload.length > 0 && item.payload.length <= PACK_MAX_CHARS;
}

/** The packed form of a packable item's payload: base64 of its UTF-8, as a raw child for ltx (no XML-special characters in it). */
export function packedPayload(item: Item): RawXml {
  let raw = encoded.get(item);
  if (!raw) {
    raw = new RawXml(Buffer.from(item.payload, 'utf8').toString('base64'));
    encoded.set(item, raw);
  }
  return raw;
}

/** Parses one serialized payload element with the stream parser's limits (depth, size). Throws when it is not exactly one well-formed element within them (text beside it included). */
function parsePayload(xml: string): Element {
  const parser = new StreamParser();
  const found: Element[] = [];
  let error: unknown;
  parser.on('element', (el: Element) => found.push(el));
  parser.on('error', (err: unknown) => (error ??= err));
  parser.write('<packed>');
  parser.write(xml);
  parser.write('</packed>');
  if (error) throw error instanceof Error ? error : new Error(String(error));
  const [el] = found;
  if (found.length !== 1 || !el) throw new Error(`a packed payload must be one element (found ${found.length})`);
  const refused = refusal(el);
  if (refused) throw new Error(refused);
  return el;
}

export interface Unpacked {
  /** Payloads replaced by their element. */
  unpacked: number;
  /** Items whose packed payload could not be read, by id: left without payload (a partner then fetches them by id, §6.5.8). */
  failed: Array<{ id: string | undefined; reason: string }>;
}

/**
 * Replaces every packed payload of a pub/sub event notification (`<message>` with `<event
 * xmlns='…#event'><items><item>`: an item whose content is text only, not blank) by the element
 * it encodes, in place, so that what follows sees the XEP-0060 form. An item whose text is not
 * base64 of one well-formed UTF-8 element is left without payload (§7.1.2.2's form) and reported
 * in `failed`. Items with child elements (plain payloads), empty items and other stanzas are left
 * as they are. Errors: none.
 */
export function unpackPayloads(stanza: Element): Unpacked {
  const out: Unpacked = { unpacked: 0, failed: [] };
  const event = stanza.getChild('event', NS.PUBSUB_EVENT);
  if (!event) return out;
  for (const items of event.getChildren('items')) {
    for (const item of items.getChildren('item')) {
      if (item.children.length === 0 || item.children.some((c) => typeof c !== 'string')) continue;
      const text = item.children.length === 1 ? (item.children[0] as string) : (item.children as string[]).join('');
      if (text.trim() === '') continue;
      item.children = [];
      try {
        const payload = parsePayload(UTF8.decode(base64Bytes(text)));
        item.cnode(payload);
        out.unpacked++;
      } catch (err) {
        out.failed.push({ id: item.attrs.id as string | undefined, reason: err instanceof Error ? err.message : String(err) });
      }
    }
  }
  return out;
}
