// The load generator's XML layer: splits an XMPP stream into top-level stanzas as strings,
// without building trees. It scans with indexOf for '<' and '>' and tracks element depth, so
// its cost is a few string searches per tag. It does not validate XML and does not support
// CDATA sections or a '>' inside attribute values (servers escape it as &gt;); that is enough
// for the streams the benchmark reads (its own payloads, server replies, stream features).
//
// Its speed is part of the benchmark's report (bench/scenarios/loadgen.ts): if the load
// generator cannot parse faster than the services push, the numbers would measure it.

export interface StreamHandlers {
  /** The opening <stream:stream ...> tag (as text). */
  onOpen(tag: string): void;
  /** One complete top-level element (stanza, features, handshake ...). */
  onStanza(xml: string): void;
  /** </stream:stream> */
  onClose(): void;
}

export class StanzaSplitter {
  private buf = '';
  private pos = 0;
  private start = -1;
  private depth = 0;

  constructor(private readonly h: StreamHandlers) {}

  /** Forget everything (before a stream restart: the server will open a new stream). */
  reset(): void {
    this.buf = '';
    this.pos = 0;
    this.start = -1;
    this.depth = 0;
  }

  push(chunk: string): void {
    const keep = this.start >= 0 ? this.start : this.pos;
    if (keep >= this.buf.length) {
      this.buf = chunk;
      this.pos = 0;
      this.start = -1;
    } else {
      if (keep > 0) {
        this.buf = this.buf.slice(keep);
        this.pos -= keep;
        if (this.start >= 0) this.start -= keep;
      }
      this.buf += chunk;
    }
    const buf = this.buf;
    let pos = this.pos;
    for (;;) {
      const lt = buf.indexOf('<', pos);
      if (lt === -1) {
        pos = buf.length;
        break;
      }
      const gt = buf.indexOf('>', lt + 1);
      if (gt === -1) {
        pos = lt;
        break;
      }
      pos = gt + 1;
      const c = buf.charCodeAt(lt + 1);
      if (c === 63 /* ? */ || c === 33 /* ! */) continue; // XML declaration, comment
      if (c === 47 /* / */) {
        this.depth--;
        if (this.depth === 1) {
          const xml = buf.slice(this.start, pos);
          this.start = -1;
          this.h.onStanza(xml);
        } else if (this.depth <= 0) {
          this.depth = 0;
          this.h.onClose();
        }
        continue;
      }
      const selfClosing = buf.charCodeAt(gt - 1) === 47;
      if (this.depth === 0) {
        this.depth = 1;
        this.h.onOpen(buf.slice(lt, pos));
      } else if (this.depth === 1) {
        if (selfClosing) this.h.onStanza(buf.slice(lt, pos));
        else {
          this.start = lt;
          this.depth = 2;
        }
      } else if (!selfClosing) this.depth++;
    }
    this.pos = pos;
  }
}

/** The value of attribute `name` on the first tag of `xml` (unescaped), if present. */
export function attr(xml: string, name: string): string | undefined {
  const end = xml.indexOf('>');
  let i = xml.indexOf(` ${name}=`);
  if (i === -1 || i > end) {
    // attributes may also be separated by a newline or tab
    const m = new RegExp(`\\s${name.replace(/[.:]/g, '\\$&')}=`).exec(xml.slice(0, end));
    if (!m) return undefined;
    i = m.index;
  }
  const q = xml.charAt(i + name.length + 2);
  const s = i + name.length + 3;
  const e = xml.indexOf(q, s);
  return e === -1 ? undefined : unescapeXml(xml.slice(s, e));
}

/** The value of attribute `name` on the first `<tag` element inside xml. */
export function childAttr(xml: string, tag: string, name: string): string | undefined {
  const i = xml.indexOf(`<${tag}`);
  return i === -1 ? undefined : attr(xml.slice(i), name);
}

/** Text between the first <tag ...> and its </tag> (no nesting of the same tag). */
export function childText(xml: string, tag: string): string | undefined {
  const i = xml.indexOf(`<${tag}`);
  if (i === -1) return undefined;
  const gt = xml.indexOf('>', i);
  if (xml.charCodeAt(gt - 1) === 47) return '';
  const e = xml.indexOf(`</${tag}>`, gt);
  return e === -1 ? undefined : unescapeXml(xml.slice(gt + 1, e));
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

export function unescapeXml(s: string): string {
  if (s.indexOf('&') === -1) return s;
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCodePoint(Number(d)))
    .replace(/&#x([0-9a-f]+);/gi, (_, h: string) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&amp;/g, '&');
}
