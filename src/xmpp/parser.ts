// The XML parser of the component stream, in place of the one @xmpp/xml builds on ltx 3.1's SAX
// parser, which spends time quadratic in the size of each socket chunk on long text (it searches
// for the next '<' again from every position when there is none) and re-joins the text read so
// far on every chunk, and which throws out of the socket handler (an uncaught exception) on an
// unknown entity. Same events ('start', 'element', 'end', 'error'), same ltx Elements. This one:
// - finds markup with one indexOf per chunk and keeps text as a list of pieces joined once;
// - speaks RFC 6120's restricted XML: a DTD, comment or processing instruction (other than the
//   XML declaration) is an error, entities other than the five predefined and character
//   references are an error, never expanded;
// - bounds a stanza's depth and size: a stanza nested deeper than `maxDepth` or longer than
//   `maxStanzaChars` is read to its end without building it, and handed on empty and marked
//   (see refusal()), so the stream and the service go on and the sender gets an error.
// withStreamParser() plugs it into an @xmpp/component-core entity and makes the socket decode
// UTF-8 across chunks (@xmpp/connection decodes each chunk alone, breaking split characters).

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import type { Component } from '@xmpp/component-core';
import { Element, unescapeXML } from 'ltx';
import { errorElement } from './errors.ts';

export class XMLError extends Error {
  override name = 'XMLError';
}

export interface StreamParserOptions {
  /** Element levels inside a stanza (the stanza itself is level 1). */
  maxDepth?: number;
  /** Characters of one stanza, markup included. */
  maxStanzaChars?: number;
  /** Characters of one tag (name and attributes). */
  maxTagChars?: number;
}

export const PARSER_LIMITS = { maxDepth: 1000, maxStanzaChars: 32 * 1024 * 1024, maxTagChars: 1024 * 1024 } as const;

const refused = new WeakMap<Element, string>();

/** Why the parser handed on this stanza empty (too deep, too large), or undefined. */
export function refusal(stanza: Element): string | undefined {
  return refused.get(stanza);
}

/**
 * The answer to a stanza the parser refused: an iq error (policy-violation, modify) for a request,
 * nothing for other stanzas. Undefined when the stanza was not refused.
 */
export function refusalReply(stanza: Element): { reason: string; reply: Element | undefined } | undefined {
  const reason = refusal(stanza);
  if (reason === undefined) return undefined;
  const { type, id, from, to } = stanza.attrs as Record<string, string | undefined>;
  if (stanza.name !== 'iq' || (type !== 'get' && type !== 'set') || !from) return { reason, reply: undefined };
  const reply = new Element('iq', { type: 'error', id, to: from, from: to });
  reply.cnode(errorElement({ type: 'modify', condition: 'policy-violation' }, reason));
  return { reason, reply };
}

const ATTRIBUTE = /([^\s=/>]+)\s*=\s*(?:'([^']*)'|"([^"]*)")/g;

/**
 * V8 keeps a substring of 13 characters or more as a slice of the string it was cut from: an
 * attribute value (a JID, an item or archive id) kept after its stanza — in a set of ids that
 * arrived live during a catch-up, a cache, a position — would keep the whole socket chunk it came
 * in alive (64 KiB and more: a catch-up under a stream of notifications held every chunk of it).
 * Such values are copied into a string of their own; shorter ones V8 copies anyway.
 */
function detached(value: string): string {
  return value.length < 13 ? value : (' ' + value).slice(1);
}

/**
 * Character data or an attribute value with its entities expanded, as ltx's unescapeXML (which
 * it falls back to for character references and for what it refuses: an unknown entity throws).
 * Text relayed by Prosody has every `"` and `'` as `&quot;` / `&apos;` — a JSON payload hundreds
 * of them — and unescapeXML calls a function per entity and concatenates piece by piece (a rope
 * that JSON.parse must flatten again): a partner's Hermod spent ~40 µs an item there. The five
 * predefined entities are replaced here with one native pass each, `&amp;` last (so `&amp;quot;`
 * stays `&quot;`).
 */
export function unescapeText(s: string): string {
  if (s.indexOf('&') === -1) return s;
  if (s.indexOf('&#') !== -1) return unescapeXML(s);
  const out = s.replaceAll('&quot;', '"').replaceAll('&apos;', "'").replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  // Only `&amp;` may be left: anything else is for unescapeXML to refuse.
  for (let at = out.indexOf('&'); at !== -1; at = out.indexOf('&', at + 1)) if (!out.startsWith('&amp;', at)) return unescapeXML(s);
  return out.replaceAll('&amp;', '&');
}

export class StreamParser extends EventEmitter {
  private readonly maxDepth: number;
  private readonly maxStanzaChars: number;
  private readonly maxTagChars: number;
  private root: Element | undefined;
  private cursor: Element | undefined;
  /** Levels below the stream element (stanza = 1). */
  private depth = 0;
  /** Unfinished markup carried over from the previous chunk (starts with '<'). */
  private pending = '';
  /** Where to go on scanning `pending` for the end of the tag, and the open quote there. */
  private scanFrom = 1;
  private quote = 0;
  private inCdata = false;
  private text: string[] = [];
  private stanzaChars = 0;
  /** Set while reading a refused stanza to its end. */
  private refusing: string | undefined;
  private failed = false;
  /** For Buffer input: characters split between chunks are joined. */
  private readonly decoder = new StringDecoder('utf8');

  constructor(options: StreamParserOptions = {}) {
    super();
    this.maxDepth = options.maxDepth ?? PARSER_LIMITS.maxDepth;
    this.maxStanzaChars = options.maxStanzaChars ?? PARSER_LIMITS.maxStanzaChars;
    this.maxTagChars = options.maxTagChars ?? PARSER_LIMITS.maxTagChars;
  }

  write(chunk: string | Buffer): void {
    if (this.failed) return;
    try {
      this.parse(typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    } catch (err) {
      this.failed = true;
      this.emit('error', err instanceof XMLError ? err : new XMLError(err instanceof Error ? err.message : String(err)));
    }
  }

  end(chunk?: string | Buffer): void {
    if (chunk) this.write(chunk);
  }

  private parse(chunk: string): void {
    const data = this.pending ? this.pending + chunk : chunk;
    this.pending = '';
    let pos = 0;
    while (pos < data.length) {
      if (this.inCdata) {
        const end = data.indexOf(']]>', pos);
        if (end === -1) {
          // Keep what could be the start of ']]>' for the next chunk.
          const keep = Math.max(pos, data.length - 2);
          this.addText(data.slice(pos, keep), false);
          this.pending = data.slice(keep);
          return;
        }
        this.addText(data.slice(pos, end), false);
        this.flushText();
        this.inCdata = false;
        pos = end + 3;
        continue;
      }
      const lt = data.indexOf('<', pos);
      if (lt === -1) {
        this.addText(data.slice(pos), true);
        return;
      }
      if (lt > pos) this.addText(data.slice(pos, lt), true);
      this.flushText();
      const end = this.markupEnd(data, lt);
      if (end === -1) {
        this.pending = data.slice(lt);
        if (this.pending.length > this.maxTagChars) throw new XMLError(`a tag longer than ${this.maxTagChars} characters`);
        return;
      }
      pos = end;
    }
  }

  /** Handles the markup at `lt`; answers the position after it, or -1 when it is not complete. */
  private markupEnd(data: string, lt: number): number {
    const next = data.charCodeAt(lt + 1);
    if (next === 33 /* ! */) {
      if (data.length - lt < 9) {
        if ('<![CDATA['.startsWith(data.slice(lt))) return -1;
      } else if (data.startsWith('<![CDATA[', lt)) {
        this.countStanza(9);
        this.inCdata = true;
        this.scanFrom = 1;
        return lt + 9;
      }
      throw new XMLError('restricted XML: no DTD, comment or entity declaration may be sent on an XMPP stream');
    }
    if (next === 63 /* ? */) {
      if (this.root) throw new XMLError('restricted XML: no processing instruction may be sent on an XMPP stream');
      const close = data.indexOf('?>', lt + 2);
      return close === -1 ? -1 : close + 2; // the XML declaration before the stream header
    }
    // A tag: the first '>' outside quotes. Resumes where the last chunk left off.
    let i = lt + this.scanFrom;
    let quote = this.quote;
    for (; i < data.length; i++) {
      const c = data.charCodeAt(i);
      if (quote) {
        if (c === quote) quote = 0;
      } else if (c === 39 || c === 34) quote = c;
      else if (c === 62 /* > */) break;
    }
    if (i >= data.length) {
      this.scanFrom = i - lt;
      this.quote = quote;
      return -1;
    }
    this.scanFrom = 1;
    this.quote = 0;
    this.tag(data.slice(lt, i + 1));
    return i + 1;
  }

  private tag(tag: string): void {
    this.countStanza(tag.length);
    if (tag.charCodeAt(1) === 47 /* / */) {
      const name = tag.slice(2, -1).trim();
      this.endElement(name);
      return;
    }
    const selfClosing = tag.charCodeAt(tag.length - 2) === 47;
    const body = tag.slice(1, selfClosing ? -2 : -1);
    const nameEnd = body.search(/[\s/>]|$/);
    const name = body.slice(0, nameEnd);
    if (!name) throw new XMLError(`malformed tag ${tag.slice(0, 80)}`);
    const attrs: Record<string, string> = {};
    if (!this.refusing) {
      ATTRIBUTE.lastIndex = nameEnd;
      for (let m = ATTRIBUTE.exec(body); m; m = ATTRIBUTE.exec(body)) attrs[m[1] as string] = detached(unescapeText(m[2] ?? m[3] ?? ''));
    }
    this.startElement(name, attrs);
    if (selfClosing) this.endElement(name);
  }

  private startElement(name: string, attrs: Record<string, string>): void {
    if (!this.root) {
      this.root = new Element(name, attrs);
      this.cursor = this.root;
      this.emit('start', this.root);
      return;
    }
    this.depth++;
    if (this.depth === 1) {
      this.stanzaChars = 0;
      this.refusing = undefined;
    }
    if (!this.refusing && this.depth > this.maxDepth) this.refuse(`stanza nested deeper than ${this.maxDepth} levels`);
    if (this.refusing) return;
    const element = new Element(name, attrs);
    if (this.depth > 1) (this.cursor as Element).cnode(element);
    this.cursor = element;
  }

  private endElement(name: string): void {
    if (this.depth === 0) {
      if (!this.root || name !== this.root.name) throw new XMLError(`</${name}> does not close the stream`);
      this.emit('end', this.root);
      return;
    }
    this.depth--;
    if (this.refusing) {
      if (this.depth > 0) return;
      const stanza = this.cursor as Element;
      refused.set(stanza, this.refusing);
      this.refusing = undefined;
      this.cursor = this.root;
      this.emit('element', stanza);
      return;
    }
    const cursor = this.cursor as Element;
    if (name !== cursor.name) throw new XMLError(`${cursor.name} must be closed before ${name}`);
    if (this.depth === 0) {
      this.cursor = this.root;
      cursor.parent = this.root ?? null;
      this.emit('element', cursor);
      return;
    }
    this.cursor = cursor.parent as Element;
  }

  /** Stops building the current stanza: it is kept (attributes only) and read to its end. */
  private refuse(reason: string): void {
    let stanza = this.cursor as Element;
    while (stanza.parent && stanza.parent !== this.root) stanza = stanza.parent as Element;
    stanza.children = [];
    this.cursor = stanza;
    this.refusing = reason;
  }

  private countStanza(chars: number): void {
    if (this.depth === 0) return;
    this.stanzaChars += chars;
    if (this.depth > 0 && !this.refusing && this.stanzaChars > this.maxStanzaChars) {
      this.refuse(`stanza larger than ${this.maxStanzaChars} characters`);
      this.text = [];
    }
  }

  private addText(piece: string, escaped: boolean): void {
    if (!piece) return;
    this.countStanza(piece.length);
    if (this.refusing || this.depth === 0) {
      if (this.depth === 0 && this.root && piece.trim()) throw new XMLError('text outside a stanza');
      return;
    }
    this.text.push(piece);
    this.textEscaped = escaped;
  }

  private textEscaped = true;

  private flushText(): void {
    if (this.text.length === 0) return;
    const joined = this.text.length === 1 ? (this.text[0] as string) : this.text.join('');
    this.text = [];
    if (this.refusing || this.depth === 0) return;
    (this.cursor as Element).t(this.textEscaped ? unescapeText(joined) : joined);
  }
}

interface ComponentInternals {
  Parser: new () => EventEmitter;
  _attachSocket(socket: Socket): void;
}

/** Makes an @xmpp/component-core entity use StreamParser and decode UTF-8 across socket chunks. */
export function withStreamParser(entity: Component): Component {
  // component-core's connection reads these two from the instance (prototype members upstream).
  const internals = entity as unknown as ComponentInternals;
  internals.Parser = StreamParser;
  const attach = internals._attachSocket.bind(entity);
  internals._attachSocket = (socket: Socket) => {
    attach(socket);
    socket.setEncoding('utf8');
  };
  return entity;
}
