// XEP-0059 <set/> parsing and building (src/xmpp/rsm.ts), with the XEP's own examples.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { parse, type Element } from 'ltx';
import { StanzaError } from '../../src/xmpp/errors.ts';
import { parseRsm, rsmResult } from '../../src/xmpp/rsm.ts';

const query = (set: string): Element => parse(`<query xmlns='jabber:iq:search'>${set}</query>`) as Element;
const RSM = "xmlns='http://jabber.org/protocol/rsm'";

it('reads max, after, before (empty: last page) and index; caps max; no <set/> is no paging', () => {
  assert.equal(parseRsm(query(''), 100), undefined);
  assert.deepEqual(parseRsm(query(`<set ${RSM}><max>10</max></set>`), 100), { max: 10 });
  assert.deepEqual(parseRsm(query(`<set ${RSM}/>`), 100), { max: 100 });
  assert.deepEqual(parseRsm(query(`<set ${RSM}><max>5000</max><after>peterpan@neverland.lit</after></set>`), 100), { max: 100, after: 'peterpan@neverland.lit' });
  assert.deepEqual(parseRsm(query(`<set ${RSM}><max>10</max><before/></set>`), 100), { max: 10, before: '' });
  assert.deepEqual(parseRsm(query(`<set ${RSM}><max>10</max><index>371</index></set>`), 100), { max: 10, index: 371 });
  assert.deepEqual(parseRsm(query(`<set xmlns='urn:other'><max>1</max></set>`), 100), undefined);
});

it('refuses malformed sets with bad-request', () => {
  for (const set of ['<max>-1</max>', '<max>ten</max>', '<after/>', '<after>a</after><before>b</before>', '<index>1</index><after>a</after>']) {
    assert.throws(() => parseRsm(query(`<set ${RSM}>${set}</set>`), 100), (e: unknown) => e instanceof StanzaError && e.spec.condition === 'bad-request', set);
  }
});

it('builds first (with index), last and count; an empty page has only count', () => {
  const set = rsmResult({ entries: [1, 2], count: 800, firstIndex: 10 }, ['a', 'b']);
  assert.equal(set.toString(), `<set xmlns="http://jabber.org/protocol/rsm"><first index="10">a</first><last>b</last><count>800</count></set>`);
  assert.equal(rsmResult({ entries: [], count: 0, firstIndex: 0 }, []).toString(), `<set xmlns="http://jabber.org/protocol/rsm"><count>0</count></set>`);
});
