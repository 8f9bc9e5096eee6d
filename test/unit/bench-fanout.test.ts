// The replication benchmark's fan-out rounds of one system and partner count taken together
// (bench/scenarios/replication-fanout.ts roundOf): the report and the issue 15 verdict compare
// these means, so a wrong one would misreport the N = 4 ratio.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { roundOf, type FanoutRound } from '../../bench/scenarios/replication-fanout.ts';

const round = (system: FanoutRound['system'], repeat: number, docsPerSec: number, cpu: number, arrived: number[]): FanoutRound => ({
  system,
  partners: 2,
  repeat,
  docs: 1000,
  ms: 1_000_000 / docsPerSec,
  docsPerSec,
  loadMs: 100,
  perPartnerMs: arrived.map(() => 1_000_000 / docsPerSec),
  arrived,
  cpuSeconds: { couchS: cpu },
  cpuPct: { couchS: cpu * 10, other: repeat },
  sourceCpuMsPerDoc: cpu,
  partnerCpuMsPerDoc: cpu / 2,
});

describe('bench fan-out: rounds of one system and partner count', () => {
  it('means of the alternating rounds; a partner counts its least arrived; other systems and counts left out', () => {
    const rounds = [round('replicate', 0, 300, 3, [1000, 1000]), round('hermod', 0, 200, 2, [1000, 1000]), round('hermod', 1, 300, 1, [1000, 990]), round('replicate', 1, 100, 5, [1000, 1000])];
    const h = roundOf(rounds, 'hermod', 2) as FanoutRound;
    assert.equal(h.docsPerSec, 250);
    assert.equal(h.sourceCpuMsPerDoc, 1.5);
    assert.equal(h.partnerCpuMsPerDoc, 0.75);
    assert.deepEqual(h.cpuPct, { couchS: 15, other: 0.5 });
    assert.deepEqual(h.cpuSeconds, { couchS: 1.5 }, 'each record keeps its own keys');
    assert.deepEqual(h.arrived, [1000, 990]);
    assert.equal((roundOf(rounds, 'replicate', 2) as FanoutRound).docsPerSec, 200);
    assert.equal(roundOf(rounds, 'hermod', 4), undefined);
  });

  it('a single round is itself', () => {
    const only = round('hermod', 0, 200, 2, [1000]);
    assert.equal(roundOf([only], 'hermod', 2), only);
  });
});
