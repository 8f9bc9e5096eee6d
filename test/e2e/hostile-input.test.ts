// Hostile input, end to end: a fast-check property suite throws 10 000 generated and mutated
// requests at the real hermod process through real Prosody (a real c2s client): malformed
// pub/sub requests, invalid data forms, invalid JIDs and node ids, unknown namespaces, several
// children, deep nesting and big payloads. Every request gets a result or a stanza error with a
// defined RFC 6120 condition; requests with an unknown namespace get service-unavailable; the
// process stays up and answers a ping; its RSS stays bounded. Deep and big payloads go to their
// own node (max_items 1) so that replies (items, MAM pages) stay small and the run stays short.
// Big payloads stop at 80 kB (above max_payload_size). (Bigger ones used to make this run minutes
// long: ltx 3.1.2's parser spent CPU quadratic in each socket chunk of a long text node; the
// component stream now uses src/xmpp/parser.ts, linear — see test/unit/xml-parser.test.ts.)

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { escapeXML } from 'ltx';
import type { HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { IqError, PUBSUB, type TestClient } from './client.ts';
import { nodeConfigForm, useSite } from './fixtures.ts';

const RUNS = 10_000;
const CONCURRENCY = 64;
const RSS_LIMIT_BYTES = 512 * 1024 * 1024;
const CONDITIONS = new Set([
  'bad-request', 'conflict', 'feature-not-implemented', 'forbidden', 'gone', 'internal-server-error', 'item-not-found', 'jid-malformed',
  'not-acceptable', 'not-allowed', 'not-authorized', 'policy-violation', 'recipient-unavailable', 'redirect', 'registration-required',
  'remote-server-not-found', 'remote-server-timeout', 'resource-constraint', 'service-unavailable', 'subscription-required',
  'undefined-condition', 'unexpected-request',
]);
const UNKNOWN_NS = 'urn:example:hostile:';

const NAMESPACES = [
  PUBSUB, `${PUBSUB}#owner`, `${PUBSUB}#event`, `${PUBSUB}#publish-options`, 'http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items',
  'jabber:x:data', 'http://jabber.org/protocol/rsm', 'urn:xmpp:mam:2', 'http://jabber.org/protocol/commands', 'urn:xmpp:ping', 'jabber:iq:version', '', `${UNKNOWN_NS}a`,
];
const NAMES = ['pubsub', 'publish', 'item', 'items', 'subscribe', 'unsubscribe', 'create', 'configure', 'options', 'retract', 'purge', 'delete', 'affiliations',
  'affiliation', 'subscriptions', 'subscription', 'default', 'publish-options', 'x', 'field', 'value', 'set', 'max', 'after', 'before', 'index', 'query', 'command', 'ping', 'entry'];
const ATTRS = ['node', 'jid', 'id', 'max_items', 'subid', 'var', 'type', 'notify', 'affiliation', 'subscription', 'action', 'queryid', 'xmlns:foo'];
// Text values, valid and not: JIDs, node ids, numbers, dates, unicode, long strings.
const textValue = fc.oneof(
  fc.constantFrom('', 'n', 'fz', 'alice@alpha.test', 'alice@alpha.test/r', '@@', 'a@b@c', '/r', 'x'.repeat(1100) + '@alpha.test', 'pubsub.alpha.test', '-1', '0', '1',
    '99999999999999999999', 'NaN', 'true', 'submit', 'form', 'cancel', 'result', 'max', '2024-13-45T99:99:99Z', 'http://jabber.org/protocol/pubsub#node_config',
    'pubsub#max_items', 'pubsub#access_model', 'whitelist', 'presence', 'ü\u00e9\u4e2d😀', '\u200b', ' '),
  fc.string({ maxLength: 40 }),
  fc.stringOf(fc.constantFrom('a', 'Z', '9', '@', '/', '.', '-', '#', ' ', '&', '<', '"', "'"), { maxLength: 60 }),
);

interface Spec {
  name: string;
  ns: string | undefined;
  attrs: Array<[string, string]>;
  text: string | undefined;
  children: Spec[];
}

const element: fc.Memo<Spec> = fc.memo((depth) =>
  fc.record({
    name: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...NAMES) }, { weight: 1, arbitrary: fc.constantFrom('a', 'zz-unknown', 'Pubsub') }),
    ns: fc.option(fc.constantFrom(...NAMESPACES), { nil: undefined, freq: 3 }),
    attrs: fc.uniqueArray(fc.tuple(fc.constantFrom(...ATTRS.filter((a) => a !== 'xmlns:foo')), textValue), { maxLength: 3, selector: ([k]) => k }),
    text: fc.option(textValue, { nil: undefined, freq: 2 }),
    children: depth <= 1 ? fc.constant([]) : fc.array(element(depth - 1), { maxLength: 3 }),
  }),
);

function render(spec: Spec): string {
  const attrs = [...(spec.ns !== undefined ? [['xmlns', spec.ns] as [string, string]] : []), ...spec.attrs].map(([k, v]) => ` ${k}='${escapeXML(v)}'`).join('');
  return `<${spec.name}${attrs}>${spec.text !== undefined ? escapeXML(spec.text) : ''}${spec.children.map(render).join('')}</${spec.name}>`;
}

/** The child of one request: generated trees, mutated valid requests, deep nesting, big payloads. */
const request = fc.oneof(
  { weight: 6, arbitrary: element(5).map((spec) => ({ xml: render({ ...spec, ns: spec.ns ?? PUBSUB }), children: 1 })) },
  {
    weight: 3,
    // A valid request, then mutated: attribute values swapped for hostile ones, elements renamed.
    arbitrary: fc
      .tuple(
        fc.constantFrom(
          `<pubsub xmlns='${PUBSUB}'><publish node='fz'><item id='I'><entry xmlns='http://www.w3.org/2005/Atom'><title>T</title></entry></item></publish></pubsub>`,
          `<pubsub xmlns='${PUBSUB}'><subscribe node='fz' jid='J'/></pubsub>`,
          `<pubsub xmlns='${PUBSUB}'><items node='fz' max_items='M'/></pubsub>`,
          `<pubsub xmlns='${PUBSUB}#owner'><configure node='fz'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#max_items'><value>V</value></field></x></configure></pubsub>`,
          `<pubsub xmlns='${PUBSUB}'><create node='N'/><configure><x xmlns='jabber:x:data' type='submit'><field var='F'><value>V</value></field></x></configure></pubsub>`,
          `<query xmlns='urn:xmpp:mam:2' node='fz'><x xmlns='jabber:x:data' type='submit'><field var='start'><value>V</value></field></x><set xmlns='http://jabber.org/protocol/rsm'><max>M</max><after>I</after></set></query>`,
          `<pubsub xmlns='${PUBSUB}#owner'><affiliations node='fz'><affiliation jid='J' affiliation='V'/></affiliations></pubsub>`,
          `<query xmlns='http://jabber.org/protocol/disco#items' node='N'><set xmlns='http://jabber.org/protocol/rsm'><max>M</max><index>M</index></set></query>`,
        ),
        fc.record({ I: textValue, J: textValue, M: textValue, V: textValue, N: textValue, F: textValue }),
        fc.constantFrom('', 'publish', 'item', 'x', 'field', 'set'),
      )
      .map(([template, values, renamed]) => {
        let xml = template.replace(/='([IJMVNF])'|>([IJMVNF])</g, (match, attr: string | undefined, text: string | undefined) =>
          attr ? `='${escapeXML(values[attr as 'I'])}'` : `>${escapeXML(values[text as 'I'])}<`,
        );
        if (renamed) xml = xml.replaceAll(`<${renamed} `, `<bogus-${renamed} `).replaceAll(`</${renamed}>`, `</bogus-${renamed}>`);
        return { xml, children: 1 };
      }),
  },
  { weight: 1, arbitrary: fc.constantFrom(`${UNKNOWN_NS}x`, `${UNKNOWN_NS}y`).map((ns) => ({ xml: `<query xmlns='${ns}'><pubsub xmlns='${PUBSUB}'/></query>`, children: 1 })) },
  { weight: 1, arbitrary: fc.integer({ min: 50, max: 1500 }).map((depth) => ({ xml: `<pubsub xmlns='${PUBSUB}'><publish node='big'><item>${'<d xmlns="urn:deep">'.repeat(depth)}${'</d>'.repeat(depth)}</item></publish></pubsub>`, children: 1 })) },
  { weight: 1, arbitrary: fc.integer({ min: 10_000, max: 80_000 }).map((size) => ({ xml: `<pubsub xmlns='${PUBSUB}'><publish node='big'><item id='big'><p xmlns='urn:big'>${'x'.repeat(size)}</p></item></publish></pubsub>`, children: 1 })) },
  { weight: 1, arbitrary: fc.constant({ xml: `<pubsub xmlns='${PUBSUB}'><items node='fz'/></pubsub>`, children: 2 }) },
);

function rssOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) * 1024;
}

describe('hostile input through a real server', { timeout: 120_000 }, () => {
  const site = useSite({ name: 'hostile', ejabberd: false });
  let home: ServerInfo;
  let hermod: HermodProcess | undefined;
  let alice: TestClient;

  before(async () => {
    home = site.alpha;
    hermod = await site.hermod({ server: home, extra: { log: { level: 'info' } } });
    alice = await site.user(home, 'alice');
  });

  it(`answers each of ${RUNS} generated requests with a result or a defined stanza error, stays up, and keeps its memory bounded`, async () => {
    const SVC = home.componentJid;
    const pid = (hermod as HermodProcess).pid;
    // Small nodes: what a hostile request can make the service send back stays bounded
    // (items of 'fz' are also read through MAM pages of up to 250, so keep them small).
    const form = (max: number): string => `<configure>${nodeConfigForm({ max_items: String(max) })}</configure>`;
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='fz'/>${form(20)}</pubsub>`);
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='big'/>${form(1)}</pubsub>`);
    const requests = fc.sample(fc.tuple(fc.constantFrom('get', 'set') as fc.Arbitrary<'get' | 'set'>, request), { numRuns: RUNS, seed: 20260407 });
    let results = 0;
    let peakRss = rssOf(pid);
    const conditions = new Map<string, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < requests.length) {
        const [type, { xml, children }] = requests[next++] as (typeof requests)[number];
        const body = children === 2 ? `${xml}${xml}` : xml;
        try {
          await alice.iqRaw(type, SVC, body, 15_000);
          results++;
        } catch (err) {
          if (!(err instanceof IqError)) throw new Error(`no answer to: ${body.slice(0, 300)}\n${String(err)}`);
          assert.ok(CONDITIONS.has(err.condition), `undefined condition ${err.condition} for ${body.slice(0, 300)}`);
          conditions.set(err.condition, (conditions.get(err.condition) ?? 0) + 1);
          if (children === 2) assert.equal(err.condition, 'bad-request', 'two children');
          if (xml.startsWith(`<query xmlns='${UNKNOWN_NS}`)) assert.equal(err.condition, 'service-unavailable', 'unknown namespace');
        }
        if (next % 500 === 0) peakRss = Math.max(peakRss, rssOf(pid));
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    peakRss = Math.max(peakRss, rssOf(pid));
    const errors = [...conditions.values()].reduce((a, b) => a + b, 0);
    assert.equal(results + errors, RUNS, 'every request answered');
    assert.ok(results > 0 && errors > 0, `both results (${results}) and errors (${errors})`);
    assert.ok(conditions.get('bad-request'), 'malformed requests are bad-request');
    assert.ok(peakRss < RSS_LIMIT_BYTES, `RSS peaked at ${Math.round(peakRss / 2 ** 20)} MiB`);
    // Still up and serving.
    assert.equal(process.kill(pid, 0), true);
    await alice.iq('get', SVC, `<ping xmlns='urn:xmpp:ping'/>`);
    const items = await alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='fz' max_items='1'/></pubsub>`);
    assert.equal(items.attrs.type, 'result');
  });
});
