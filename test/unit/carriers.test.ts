// Which nodes a retraction asks before deleting a document here (src/replication/carriers.ts):
// the retracting service's own nodes (followed now, or with a position its partner's settings
// still name), then other services writing into the same database — only the document's tag
// nodes; followed now, or with a position their partner still names, or, right after a restart
// before discovery found their partner, any position (the triangle case of session 16: b must not
// delete c's revision on a's retraction because c's service was not re-followed yet).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { carrierCandidates, type CarrierScope, type ServiceNode } from '../../src/replication/carriers.ts';

const A = 'pubsub.a.test';
const C = 'pubsub.c.test';
const D = 'pubsub.d.test';
const owners: Record<string, string> = { [A]: 'a@a.test', [C]: 'c@c.test', [D]: 'd@d.test' };

/** a follows every tag; c follows /tags/x and /tags/y with a stylesheet on /tags/y; d writes into another database. */
function scope(over: Partial<CarrierScope>): CarrierScope {
  return {
    service: A,
    partner: 'a@a.test',
    followed: [],
    positions: [],
    ownerOf: (s) => owners[s],
    named: (p, node) => (p === 'a@a.test' ? node.startsWith('/tags/') : p === 'c@c.test' ? ['/tags/x', '/tags/y'].includes(node) : p === 'd@d.test'),
    transformed: (p, node) => p === 'c@c.test' && node === '/tags/y',
    sameTarget: (p) => p !== 'd@d.test',
    tagged: new Set(['/tags/x', '/tags/y']),
    starting: false,
    ...over,
  };
}
const show = (r: { own: ServiceNode[]; others: ServiceNode[] }) => ({ own: r.own.map(([s, n]) => `${s} ${n}`), others: r.others.map(([s, n]) => `${s} ${n}`) });

describe('carrierCandidates', () => {
  it("the retracting service's nodes: followed now, and those with a position its partner still names; none with a stylesheet", () => {
    const r = carrierCandidates(
      scope({
        followed: [[A, '/tags/x'], [A, 'custom']],
        positions: [[A, '/tags/x'], [A, '/tags/old'], [A, 'dropped'], [A, '/tags/z']],
        tagged: undefined,
        transformed: (p, node) => p === 'a@a.test' && node === '/tags/z',
      }),
    );
    assert.deepEqual(show(r), { own: [`${A} /tags/x`, `${A} custom`, `${A} /tags/old`], others: [] });
  });

  it("other services: only the document's tag nodes, into the same database, without a stylesheet, followed or named by their partner", () => {
    const r = carrierCandidates(
      scope({
        followed: [[C, '/tags/x'], [C, '/tags/y'], [C, '/tags/other'], [D, '/tags/x']],
        positions: [[C, '/tags/x'], [D, '/tags/y']],
      }),
    );
    assert.deepEqual(show(r), { own: [], others: [`${C} /tags/x`] });
    const byPosition = carrierCandidates(scope({ positions: [[C, '/tags/x'], [C, '/tags/y']] }));
    assert.deepEqual(show(byPosition).others, [`${C} /tags/x`], 'a position its partner still names: not re-followed yet after a restart');
    const unnamed = carrierCandidates(scope({ positions: [[C, '/tags/x']], named: (p) => p !== 'c@c.test' }));
    assert.deepEqual(show(unnamed).others, [], 'a position its partner no longer names');
  });

  it('a service whose partner is not found yet: its positions count until the first full discovery round, not after', () => {
    const unknown = 'pubsub.e.test';
    const base = { positions: [[unknown, '/tags/x'], [unknown, '/tags/q']] as ServiceNode[] };
    assert.deepEqual(show(carrierCandidates(scope({ ...base, starting: true }))).others, [`${unknown} /tags/x`]);
    assert.deepEqual(show(carrierCandidates(scope({ ...base, starting: false }))).others, [], 'after it: no partner owns that service any more');
    assert.deepEqual(show(carrierCandidates(scope({ followed: [[unknown, '/tags/x']] }))).others, [`${unknown} /tags/x`], 'followed now: asked as before');
  });

  it('no node twice', () => {
    const r = carrierCandidates(scope({ followed: [[A, '/tags/x'], [C, '/tags/x']], positions: [[A, '/tags/x'], [C, '/tags/x'], [C, '/tags/x']] }));
    assert.deepEqual(show(r), { own: [`${A} /tags/x`], others: [`${C} /tags/x`] });
  });
});
