// Packed payloads: Hermod's subscription option `{urn:hermod:pubsub:0}packed` (SubscriptionOptions.packed).
//
// An item notification to a subscriber that asked for it carries each payload as
//   <item id='…' publisher='…'><packed xmlns='urn:hermod:pubsub:0'>BASE64</packed></item>
// where BASE64 is the payload's serialized XML (UTF-8), exactly as a subscriber without the
// option gets it inside <item/>. Why: the XMPP servers between two Hermods parse and re-serialise
// every element, attribute and text piece of every copy, and each `"` of a JSON payload travels
// as `&quot;`, which expat hands to Prosody's Lua one callback at a time (docs/PERFORMANCE.md,
// session 15: ~130 pieces per Ajatus document). Packed, a payload is one text node without
// entities: at four partners Prosody's CPU per document halved (session 17). Base64 rather than
// a compressed form: compressing content of several authors together leaks through lengths
// (the reason XEP-0138 was deprecated). Only notifications are packed; items and history
// requests (§6.5, XEP-0313) answer in plain XEP-0060 form.

import { Element } from 'ltx';
import { NS } from './ns.ts';
import { refusal, StreamParser } from './parser.ts';
import { RawXml } from './raw.ts';

/** The element's name (namespace: NS.HERMOD_PUBSUB). */
export const PACKED = 'packed';

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** `<packed xmlns='urn:hermod:pubsub:0'>base64 of payload</packed>`, serialized (payload: serialized XML, non-empty). */
export function packedPayload(payload: string): RawXml {
  return new RawXml(`<${PACKED} xmlns="${NS.HERMOD_PUBSUB}">${Buffer.from(payload, 'utf8').toString('base64')}</${PACKED}>`);
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
 * Replaces every `<packed/>` payload of a pub/sub event notification (`<message>` with
 * `<event xmlns='…#event'><items><item>`) by the element it encodes, in place, so that what
 * follows sees the XEP-0060 form. An item whose packed payload is not base64 of one well-formed
 * element is left without payload (XEP-0060 §7.1.2.2's form) and reported in `failed`. Other
 * stanzas are left as they are.
 */
export function unpackPayloads(stanza: Element): Unpacked {
  const out: Unpacked = { unpacked: 0, failed: [] };
  const event = stanza.getChild('event', NS.PUBSUB_EVENT);
  if (!event) return out;
  for (const items of event.getChildren('items')) {
    for (const item of items.getChildren('item')) {
      const at = item.children.findIndex((c) => typeof c !== 'string' && c.name === PACKED && c.attrs.xmlns === NS.HERMOD_PUBSUB);
      if (at === -1) continue;
      const packed = item.children[at] as Element;
      try {
        const text = packed.getText().replace(/\s+/g, '');
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error('not base64');
        const payload = parsePayload(UTF8.decode(Buffer.from(text, 'base64')));
        payload.parent = item;
        item.children[at] = payload;
        out.unpacked++;
      } catch (err) {
        item.children.splice(at, 1);
        out.failed.push({ id: item.attrs.id as string | undefined, reason: err instanceof Error ? err.message : String(err) });
      }
    }
  }
  return out;
}
