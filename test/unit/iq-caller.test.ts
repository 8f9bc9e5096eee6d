// IqCaller: the requests the component sends, each answered, timed out or cancelled.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Element } from 'ltx';
import { IqCaller } from '../../src/component/iq-caller.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';

describe('IqCaller', () => {
  it('resolves with the result and rejects with the error the addressee answered', async () => {
    const sent: Element[] = [];
    const iq = new IqCaller('pubsub.a.test', (s) => (sent.push(s), true));
    const ok = iq.request('pubsub.b.test', 'get', new Element('query', { xmlns: 'http://jabber.org/protocol/disco#info' }));
    const refused = iq.request('pubsub.b.test', 'set', new Element('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }));
    const [first, second] = sent;
    assert.equal(iq.handleResponse(new Element('iq', { type: 'result', id: first?.attrs.id, from: 'pubsub.b.test' })), true);
    iq.handleResponse(new Element('iq', { type: 'error', id: second?.attrs.id, from: 'pubsub.b.test' }).c('error', { type: 'cancel' }).c('forbidden', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' }).root());
    assert.equal((await ok).attrs.type, 'result');
    await assert.rejects(refused, (err: unknown) => err instanceof IqError && err.condition === 'forbidden');
    assert.equal(iq.handleResponse(new Element('iq', { type: 'result', id: 'unknown' })), false, 'a reply to nothing asked is not taken');
  });

  it('cancelAll(which) ends only the chosen requests (partners at shutdown), the others still get their answer', async () => {
    const sent: Element[] = [];
    const iq = new IqCaller('pubsub.a.test', (s) => (sent.push(s), true));
    const partner = iq.request('pubsub.b.test', 'get', new Element('query'));
    const roster = iq.request('alice@a.test', 'get', new Element('query', { xmlns: 'jabber:iq:roster' }));
    iq.cancelAll((to) => to !== 'a.test' && !to.endsWith('@a.test'));
    await assert.rejects(partner, (err: unknown) => err instanceof IqError && err.condition === 'service-unavailable');
    assert.equal(iq.pendingCount, 1);
    iq.handleResponse(new Element('iq', { type: 'result', id: sent[1]?.attrs.id, from: 'alice@a.test' }));
    assert.equal((await roster).attrs.type, 'result');
  });
});

describe('IqError.undecided: whether asking again later may get another answer', () => {
  const err = (condition: string, type: string): IqError => new IqError(condition, undefined, undefined, 'pubsub.alpha.test', type);
  it('every error of type wait (RFC 6120 §8.3.2: temporary), whatever its condition', () => {
    for (const condition of ['policy-violation', 'resource-constraint', 'unexpected-request', 'undefined-condition']) assert.equal(err(condition, 'wait').undecided, true, condition);
  });
  it('no answer or a failing service, whatever the type the answer gave', () => {
    for (const condition of ['remote-server-timeout', 'remote-server-not-found', 'service-unavailable', 'internal-server-error', 'resource-constraint']) assert.equal(err(condition, 'cancel').undecided, true, condition);
  });
  it('final answers are decided: item-not-found, forbidden, not-allowed, a rate limit without type wait', () => {
    for (const [condition, type] of [['item-not-found', 'cancel'], ['forbidden', 'auth'], ['not-allowed', 'cancel'], ['policy-violation', 'modify'], ['bad-request', 'modify']] as const) assert.equal(err(condition, type).undecided, false, `${type}/${condition}`);
  });
});
