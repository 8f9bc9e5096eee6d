// Which nodes a retraction asks before deleting a document here (src/replication/carriers.ts):
// the retracting service's own nodes (followed now, or with a position its partner's settings
// still name; never one with a stylesheet), then other services writing into the same database —
// only the document's tag nodes followed now (sites in a triangle: b must not delete c's revision
// on a's retraction).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { carrierCandidates, type CarrierScope, type ServiceNode } from '../../src/replication/carriers.ts';

const A = 'pubsub.a.test';
const C = 'pubsub.c.test';
const D = 'pubsub.d.test';
const E = 'pubsub.e.test';
const owners: Record<string, string> = { [A]: 'a@a.test', [C]: 'c@c.test', [D]: 'd@d.test' };

/** a follows every tag; c follows /tags/x and /tags/y with a stylesheet on /tags/y; d writes into another database; e's partner is not known. */
function scope(over: Partial<CarrierScope>): CarrierScope {
  return {
    service: A,
    partner: 'a@a.test',
    followed: [],
    positions: [],
    ownerOf: (s) => owners[s],
    named: (p, node) => (p === 'a@a.test' ? node.startsWith('/tags/') : p === 'c@c.test' ? ['/tags/x', '/tags/y'].includes(node) : p === 'd@d.test'),
    transformed: (p, node) => (p === 'c@c.test' && node === '/tags/y') || (p === 'a@a.test' && node === '/tags/z'),
    sameTarget: (p) => p !== 'd@d.test',
    tagged: new Set(['/tags/x', '/tags/y']),
    ...over,
  };
}
const show = (r: { own: ServiceNode[]; others: ServiceNode[]; earlier?: ServiceNode[] }) => ({
  own: r.own.map(([s, n]) => `${s} ${n}`),
  others: r.others.map(([s, n]) => `${s} ${n}`),
  ...(r.earlier && r.earlier.length > 0 ? { earlier: r.earlier.map(([s, n]) => `${s} ${n}`) } : {}),
});

describe('carrierCandidates', () => {
  it("the retracting service's nodes: followed now (whatever its tags), then those with a position its partner still names; none with a stylesheet", () => {
    const r = carrierCandidates(scope({ followed: [[A, '/tags/x'], [A, 'custom'], [A, '/tags/z']], positions: ['/tags/x', '/tags/old', 'dropped', '/tags/z'] }));
    assert.deepEqual(show(r), { own: [`${A} /tags/x`, `${A} custom`, `${A} /tags/old`], others: [] });
    const unknownPartner = carrierCandidates(scope({ partner: undefined, followed: [[A, '/tags/x']], positions: ['/tags/old'] }));
    assert.deepEqual(show(unknownPartner).own, [`${A} /tags/x`], 'a partner not known: what is followed now, no earlier node is named');
  });

  it("other services: the document's tag nodes followed now, into the same database, without a stylesheet; a partner not known writes where the content goes", () => {
    const r = carrierCandidates(scope({ followed: [[C, '/tags/x'], [C, '/tags/y'], [C, '/tags/other'], [D, '/tags/x'], [E, '/tags/x']], positions: [] }));
    assert.deepEqual(show(r), { own: [], others: [`${C} /tags/x`, `${E} /tags/x`] });
    const untagged = carrierCandidates(scope({ followed: [[C, '/tags/other']], tagged: undefined }));
    assert.deepEqual(show(untagged).others, [`${C} /tags/other`], 'the document not known here: every followed node counts');
    const elsewhere = carrierCandidates(scope({ followed: [[E, '/tags/x']], sameTarget: (p) => p !== undefined }));
    assert.deepEqual(show(elsewhere).others, [], 'a partner not known whose documents would go elsewhere');
  });

  it('no node twice', () => {
    const r = carrierCandidates(scope({ followed: [[A, '/tags/x'], [C, '/tags/x'], [C, '/tags/x']], positions: ['/tags/x'] }));
    assert.deepEqual(show(r), { own: [`${A} /tags/x`], others: [`${C} /tags/x`] });
  });

  it("right after a restart: other services' nodes followed in an earlier run, of a service whose recorded partner is still one and names them, into the same database, without a stylesheet", () => {
    const recorded: Record<string, string> = { [C]: 'c@c.test', [D]: 'd@d.test', [E]: 'gone@e.test' };
    const r = carrierCandidates(
      scope({
        followed: [[C, '/tags/x']],
        earlier: [[A, '/tags/x'], [C, '/tags/x'], [C, '/tags/y'], [C, '/tags/q'], [C, '/tags/other'], [D, '/tags/x'], [E, '/tags/x'], ['pubsub.f.test', '/tags/x']],
        // A removed partner's service (e) and one never recorded (f) are not asked.
        recordedOwnerOf: (service) => (service === E ? undefined : recorded[service]),
        tagged: new Set(['/tags/x', '/tags/y', '/tags/q']),
      }),
    );
    // c: /tags/x is followed now (others); /tags/y has a stylesheet, /tags/q is not named by c's
    // settings, /tags/other is not the document's tag; d writes into another database.
    assert.deepEqual(show(r), { own: [], others: [`${C} /tags/x`] });
    const named = carrierCandidates(scope({ followed: [], earlier: [[C, '/tags/x']], recordedOwnerOf: (service) => recorded[service] }));
    assert.deepEqual(show(named), { own: [], others: [], earlier: [`${C} /tags/x`] });
    const settled = carrierCandidates(scope({ followed: [], earlier: [[C, '/tags/x']], recordedOwnerOf: () => undefined }));
    assert.deepEqual(show(settled), { own: [], others: [] }, 'its partner discovered in this run (or not one now): what it wants is followed');
  });
});
