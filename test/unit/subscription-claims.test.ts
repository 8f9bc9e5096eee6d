// SubscriptionClaims (src/replication/subscription-claims.ts): what the replications sharing a
// component JID follow, and unsubscribes under way that a subscribe to the same node waits for.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SubscriptionClaims, type ClaimHolder } from '../../src/replication/subscription-claims.ts';

const holder = (followed: string[]): ClaimHolder => ({ follows: (service, node) => followed.includes(`${service} ${node}`) });

describe('subscription claims', () => {
  it('a node counts as used by others only when another holder follows it', () => {
    const claims = new SubscriptionClaims();
    const ajatus = holder(['s /tags/a']);
    const midgard = holder(['s /tags/c', 's /midgard/m']);
    claims.add(ajatus);
    claims.add(midgard);
    assert.equal(claims.byOthers(ajatus, 's', '/tags/c'), true);
    assert.equal(claims.byOthers(ajatus, 's', '/tags/a'), false, 'its own follow does not count');
    assert.equal(claims.byOthers(midgard, 's', '/tags/a'), true);
    assert.equal(claims.byOthers(midgard, 'other', '/tags/a'), false);
  });

  it('a subscribe waits for an unsubscribe of the same node under way, answered or failed', async () => {
    const claims = new SubscriptionClaims();
    const order: string[] = [];
    let answer: (ok: boolean) => void = () => undefined;
    const ending = claims.unsubscribing('s', '/tags/b', () => new Promise<void>((resolve, reject) => (answer = (ok) => (order.push('unsubscribe answered'), ok ? resolve() : reject(new Error('no answer'))))));
    const subscribe = claims.settled('s', '/tags/b').then(() => order.push('subscribe sent'));
    const other = claims.settled('s', '/tags/other').then(() => order.push('other node: at once'));
    await other;
    assert.deepEqual(order, ['other node: at once']);
    answer(false);
    await assert.rejects(ending, /no answer/);
    await subscribe;
    assert.deepEqual(order, ['other node: at once', 'unsubscribe answered', 'subscribe sent']);
    await claims.settled('s', '/tags/b'); // nothing under way any more: at once
  });
});
