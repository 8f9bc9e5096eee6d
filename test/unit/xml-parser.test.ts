// Unit tests of the component stream's XML parser (src/xmpp/parser.ts): the same stanzas as
// @xmpp/xml's own parser for a stream cut at every position (inside tags, attribute values,
// entities such as &amp;, CDATA markers, and inside multi-byte UTF-8 characters when the chunks
// are Buffers); long text nodes in big chunks; restricted XML (no DTD, entity declaration or
// expansion, comments, processing instructions); bounded depth and size, with the stream going on.

import assert from 'node:assert/strict';
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { Component } from '@xmpp/component-core';
import type { Element } from 'ltx';
import { unescapeXML } from 'ltx';
import { refusal, refusalReply, StreamParser, unescapeText, withStreamParser, type StreamParserOptions } from '../../src/xmpp/parser.ts';

// @xmpp/xml ships no types: its parser, as component-core uses it.
const XmppParser = (createRequire(import.meta.url)('@xmpp/xml') as { Parser: new () => EventEmitter & { write(data: string): void } }).Parser;

const HEADER = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='pubsub.alpha.test' id='s1'>`;
const STANZAS = [
  `<iq type='set' id='a&amp;b' from='alice@alpha.test/r' to='pubsub.alpha.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n&lt;1&gt;'><item id="x'y"><entry xmlns='http://www.w3.org/2005/Atom' attr='a>b'><title>Tom &amp; Jerry &lt;3 &#x1F600; &#233;t&#xE9;</title><content type='text'>héllo 中文 😀 emoji</content><empty/></entry></item></publish></pubsub></iq>`,
  `\n  `, // whitespace keepalive between stanzas
  `<message from='b@beta.test' to='pubsub.alpha.test' type='headline'><body><![CDATA[<not> & markup ]] ]>]]></body><x xmlns='urn:x'>a&quot;b&apos;c</x></message>`,
  `<presence from='c@alpha.test/Ü' to='pubsub.alpha.test'/>`,
  `<iq type='get' id='q' from='d@alpha.test/r' to='pubsub.alpha.test'><ping xmlns='urn:xmpp:ping'/></iq>`,
];
const STREAM = HEADER + STANZAS.join('') + '</stream:stream>';

interface Parsed {
  start?: string;
  elements: string[];
  end: boolean;
  errors: string[];
  stanzas: Element[];
}

function collect(parser: EventEmitter): Parsed {
  const out: Parsed = { elements: [], end: false, errors: [], stanzas: [] };
  parser.on('start', (el: Element) => (out.start = el.toString()));
  parser.on('element', (el: Element) => {
    out.elements.push(el.toString());
    out.stanzas.push(el);
  });
  parser.on('end', () => (out.end = true));
  parser.on('error', (err: Error) => out.errors.push(err.message));
  return out;
}

function parseWith(chunks: Array<string | Buffer>, options?: StreamParserOptions): Parsed {
  const parser = new StreamParser(options);
  const out = collect(parser);
  for (const c of chunks) parser.write(c);
  return out;
}

/** What @xmpp/xml's own parser (ltx) makes of the whole stream in one write. */
function reference(stream: string): Parsed {
  const parser = new XmppParser();
  const out = collect(parser);
  parser.write(stream);
  return out;
}

describe('StreamParser: same stanzas as @xmpp/xml on any chunking', () => {
  const expected = reference(STREAM);

  it('matches the reference on the whole stream', () => {
    assert.equal(expected.elements.length, 4);
    assert.deepEqual(parseWith([STREAM]), { ...expected, stanzas: parseWith([STREAM]).stanzas });
    const [iq, message] = parseWith([STREAM]).stanzas;
    assert.equal(iq?.attrs.id, 'a&b');
    assert.equal(iq?.getChild('pubsub')?.getChild('publish')?.attrs.node, 'n<1>');
    assert.equal(iq?.getChild('pubsub')?.getChild('publish')?.getChild('item')?.attrs.id, "x'y");
    const entry = iq?.getChild('pubsub')?.getChild('publish')?.getChild('item')?.getChild('entry');
    assert.equal(entry?.attrs.attr, 'a>b');
    assert.equal(entry?.getChildText('title'), 'Tom & Jerry <3 😀 été');
    assert.equal(entry?.getChildText('content'), 'héllo 中文 😀 emoji');
    assert.equal(message?.getChildText('body'), '<not> & markup ]] ]>');
    assert.equal(message?.getChildText('x'), `a"b'c`);
  });

  it('cut in two at every position (strings)', () => {
    for (let i = 1; i < STREAM.length; i++) {
      const got = parseWith([STREAM.slice(0, i), STREAM.slice(i)]);
      assert.deepEqual(got.elements, expected.elements, `cut at ${i}: …${STREAM.slice(Math.max(0, i - 10), i)}|${STREAM.slice(i, i + 10)}…`);
      assert.equal(got.start, expected.start);
      assert.ok(got.end && got.errors.length === 0, `cut at ${i}`);
    }
  });

  it('cut in two at every byte (Buffers: also inside multi-byte UTF-8 characters)', () => {
    const bytes = Buffer.from(STREAM, 'utf8');
    assert.ok(bytes.length > STREAM.length, 'the stream has multi-byte characters');
    for (let i = 1; i < bytes.length; i++) {
      const got = parseWith([bytes.subarray(0, i), bytes.subarray(i)]);
      assert.deepEqual(got.elements, expected.elements, `cut at byte ${i}`);
    }
  });

  it('in chunks of 1 to 13 bytes', () => {
    const bytes = Buffer.from(STREAM, 'utf8');
    for (let size = 1; size <= 13; size++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
      const got = parseWith(chunks);
      assert.deepEqual(got.elements, expected.elements, `chunks of ${size}`);
      assert.ok(got.end);
    }
  });

  it('a 1 MiB text node (base64 and escaped text) in 64 KiB and 256 KiB chunks comes out whole', () => {
    const base64 = Buffer.alloc(768 * 1024, 7).toString('base64'); // 1 MiB of text
    const escaped = 'a&amp;b&lt;c '.repeat(20_000);
    const stanza = `<message from='a@b' to='c'><data xmlns='urn:xmpp:bob'>${base64}</data><t>${escaped}</t></message>`;
    const stream = HEADER + stanza + '</stream:stream>';
    for (const size of [65_536, 262_144]) {
      const chunks: string[] = [];
      for (let i = 0; i < stream.length; i += size) chunks.push(stream.slice(i, i + size));
      const got = parseWith(chunks);
      assert.equal(got.stanzas.length, 1);
      assert.equal(got.stanzas[0]?.getChildText('data'), base64);
      assert.equal(got.stanzas[0]?.getChildText('t'), 'a&b<c '.repeat(20_000));
    }
  });
});

describe('StreamParser: restricted XML', () => {
  const laughs =
    `<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">` +
    `<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>`;

  it('refuses a DTD with entity declarations (billion laughs) with an error, expanding nothing', () => {
    const got = parseWith([laughs + HEADER + `<message from='a@b' to='c'><body>&lol2;</body></message>`]);
    assert.equal(got.errors.length, 1);
    assert.match(got.errors[0] as string, /restricted XML: no DTD/);
    assert.deepEqual(got.elements, []);
    // A DTD inside the stream too.
    const inside = parseWith([HEADER + laughs.slice(`<?xml version='1.0'?>`.length) + `<message/>`]);
    assert.equal(inside.errors.length, 1);
    assert.deepEqual(inside.elements, []);
  });

  it('refuses an undeclared entity with an error event (never a thrown exception), and goes silent after', () => {
    const parser = new StreamParser();
    const got = collect(parser);
    assert.doesNotThrow(() => parser.write(HEADER + `<message from='a@b' to='c'><body>&lol;</body></message>`));
    assert.equal(got.errors.length, 1);
    assert.match(got.errors[0] as string, /Illegal XML entity &lol;/);
    parser.write(`<message from='a@b' to='c'><body>x</body></message>`);
    assert.deepEqual(got.elements, []);
    // @xmpp/xml's own parser throws out of write() here: out of the socket's data handler.
    assert.throws(() => new XmppParser().write(HEADER + `<message><body>&lol;</body></message>`), /Illegal XML entity/);
  });

  it('refuses comments and processing instructions inside the stream', () => {
    assert.match(parseWith([HEADER + `<!-- hi --><message/>`]).errors[0] ?? '', /restricted XML/);
    assert.match(parseWith([HEADER + `<message><?php x ?></message>`]).errors[0] ?? '', /processing instruction/);
  });
});

describe('StreamParser: bounded depth and size; the stream goes on', () => {
  it('hands on a stanza nested deeper than maxDepth empty and marked, and parses the next one', () => {
    const deep = `<iq type='set' id='deep' from='alice@alpha.test/r' to='pubsub.alpha.test'>${'<d>'.repeat(200_000)}x${'</d>'.repeat(200_000)}</iq>`;
    const next = `<iq type='get' id='next' from='alice@alpha.test/r' to='pubsub.alpha.test'><ping xmlns='urn:xmpp:ping'/></iq>`;
    const chunks: string[] = [];
    const stream = HEADER + deep + next;
    for (let i = 0; i < stream.length; i += 65_536) chunks.push(stream.slice(i, i + 65_536));
    const got = parseWith(chunks);
    assert.deepEqual(got.errors, []);
    assert.equal(got.stanzas.length, 2);
    const [refused, ok] = got.stanzas as [Element, Element];
    assert.equal(refused.attrs.id, 'deep');
    assert.equal(refused.children.length, 0, 'nothing of it was kept');
    assert.equal(refusal(refused), 'stanza nested deeper than 1000 levels');
    assert.equal(refusal(ok), undefined);
    assert.ok(ok.getChild('ping', 'urn:xmpp:ping'));
    const answer = refusalReply(refused);
    assert.equal(answer?.reply?.toString(),
      `<iq type="error" id="deep" to="alice@alpha.test/r" from="pubsub.alpha.test"><error type="modify"><policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">stanza nested deeper than 1000 levels</text></error></iq>`);
    assert.equal(refusalReply(ok), undefined);
  });

  it('keeps a stanza at exactly maxDepth', () => {
    const stanza = `<message from='a@b' to='c'>${'<d>'.repeat(9)}${'</d>'.repeat(9)}</message>`;
    const got = parseWith([HEADER + stanza], { maxDepth: 10 });
    assert.equal(refusal(got.stanzas[0] as Element), undefined);
    const deeper = parseWith([HEADER + `<message from='a@b' to='c'>${'<d>'.repeat(10)}${'</d>'.repeat(10)}</message>`], { maxDepth: 10 });
    assert.match(refusal(deeper.stanzas[0] as Element) ?? '', /deeper than 10/);
  });

  it('hands on a stanza larger than maxStanzaChars empty and marked (text or children), and a message gets no reply', () => {
    const big = `<message from='a@b' to='c' id='m'><body>${'x'.repeat(5000)}</body></message>`;
    const many = `<message from='a@b' to='c' id='k'>${'<a/>'.repeat(2000)}</message>`;
    const small = `<message from='a@b' to='c' id='s'><body>ok</body></message>`;
    const got = parseWith([HEADER + big + many + small], { maxStanzaChars: 4096 });
    assert.deepEqual(got.stanzas.map((s) => [s.attrs.id, refusal(s), s.children.length]), [
      ['m', 'stanza larger than 4096 characters', 0],
      ['k', 'stanza larger than 4096 characters', 0],
      ['s', undefined, 1],
    ]);
    assert.deepEqual(refusalReply(got.stanzas[0] as Element), { reason: 'stanza larger than 4096 characters', reply: undefined });
  });

  it('refuses a tag longer than maxTagChars with an error', () => {
    const got = parseWith([HEADER + `<message a='${'x'.repeat(3000)}`, 'y'.repeat(3000)], { maxTagChars: 4096 });
    assert.match(got.errors[0] ?? '', /a tag longer than 4096 characters/);
  });
});

describe('unescapeText: what ltx unescapeXML gives, or refuses', () => {
  it('the same string for the predefined entities (amp last), character references, and none', () => {
    const cases = [
      'plain text',
      '{&quot;_id&quot;:&quot;x&quot;,&quot;v&quot;:&apos;it&apos;}',
      '&amp;quot; stays an entity &amp;amp;',
      '&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;',
      'mixed &#x41;&#66; and &quot;quotes&quot; &#xE9;',
      '&amp;',
      '',
    ];
    for (const c of cases) assert.equal(unescapeText(c), unescapeXML(c), c);
  });
  it('refuses what unescapeXML refuses: an unknown entity, a bare ampersand before a semicolon, an illegal character reference', () => {
    for (const bad of ['&foo; and &quot;', 'a & b;', '&#0;', '&quot; &ampx;']) assert.throws(() => unescapeText(bad), /Illegal XML/, bad);
  });
});

describe('withStreamParser', () => {
  it('plugs StreamParser into a component-core entity', () => {
    const entity = withStreamParser(new Component({ service: 'xmpp://127.0.0.1:5347', domain: 'pubsub.alpha.test' }));
    assert.equal((entity as unknown as { Parser: unknown }).Parser, StreamParser);
  });
});
