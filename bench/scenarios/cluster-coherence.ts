// Several Hermods on one CouchDB database (pouchdb-server): how long until what one process
// changed is enforced by another (the "coherence" section of `--only cluster`), and what the
// node's cluster-wide lock costs a publication. The two "processes" are two stores with their
// own caches, changes feeds and locks, driven from this one Node process (their event loops
// are shared: the figures include each other's work, as two processes on one core would).
//
//  - revoke: A removes a member from a whitelist node; time from A's acknowledgement until the
//    affiliations B decides on (its cache, until its changes feed drops it) no longer have it,
//    so B refuses it from then on. B's cache is looked at every millisecond or so (no I/O).
//  - subscription: A subscribes an entity; time until B's owner list (cached) shows it.
//  - grant: A adds a member; time until B lets it read (B rereads on a refusal: at once).
//  - publish: one process publishing to one node one after the other (lock taken per change
//    or passed on), then both publishing to the same node at once (the lock goes back and forth).

import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { CouchStore } from '../../src/store/couchdb.ts';
import { percentiles, type Percentiles } from '../lib/stats.ts';
import { startBenchCouch } from '../lib/couch-docs.ts';

export interface CoherenceParams {
  /** Changes measured per kind. */
  changes: number;
  /** Publications per publish run. */
  publishes: number;
}

export interface CoherenceResult {
  params: CoherenceParams;
  /** ms from A's acknowledgement until B enforces, per kind. */
  revokeMs: Percentiles;
  subscriptionMs: Percentiles;
  grantMs: Percentiles;
  /** Publication round trip at the service, ms, one process alone, sequential. */
  publishAloneMs: Percentiles;
  /** Publications per second, one process, 10 concurrent to one node. */
  publishAlonePerSec: number;
  /** Publications per second in all, both processes publishing 10 concurrent each to the same node. */
  publishBothPerSec: number;
}

const OWNER = 'owner@a.test/o';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `done` (about every ms) until it holds; resolves to the ms since `t0`. */
async function until(t0: number, done: () => Promise<boolean>): Promise<number> {
  for (let i = 0; ; i++) {
    if (await done()) return performance.now() - t0;
    if (performance.now() - t0 > 10_000) throw new Error('not enforced within 10 s');
    await sleep(1);
  }
}

const refused = (p: Promise<unknown>): Promise<boolean> =>
  p.then(
    () => false,
    (err: unknown) => err instanceof PubsubError,
  );

/** Runs the section against a pouchdb-server it starts (and removes). */
export async function runCoherence(params: CoherenceParams, log: (m: string) => void): Promise<CoherenceResult> {
  const couch = await startBenchCouch();
  const open = async (): Promise<{ store: CouchStore; service: PubsubService }> => {
    const store = new CouchStore({ url: couch.url, db: 'cluster' });
    await store.open();
    return { store, service: new PubsubService({ store, mayCreateNodes: () => true, notifier: () => undefined }) };
  };
  const [a, b] = [await open(), await open()];
  try {
    await a.service.create(OWNER, 'wl', { accessModel: 'whitelist' });
    await a.service.create(OWNER, 'open');
    const revoke: number[] = [];
    const grant: number[] = [];
    const subscription: number[] = [];
    for (let i = 0; i < params.changes; i++) {
      const member = `m${i}@a.test/r`;
      await a.service.setAffiliations(OWNER, 'wl', [{ jid: member, affiliation: 'member' }]);
      grant.push(await until(performance.now(), async () => !(await refused(b.service.getItems(member, 'wl')))));
      await a.service.setAffiliations(OWNER, 'wl', [{ jid: member, affiliation: 'none' }]);
      revoke.push(await until(performance.now(), async () => !(await b.service.getAffiliations(OWNER, 'wl')).has(member.split('/')[0] as string)));
      await a.service.subscribe(member, 'open', member);
      subscription.push(await until(performance.now(), async () => (await b.service.getSubscriptions(OWNER, 'open')).some((s) => s.jid === member)));
    }
    log(`cluster coherence: revoke p50 ${percentiles(revoke).p50.toFixed(1)} ms, p99 ${percentiles(revoke).p99.toFixed(1)} ms`);

    const alone: number[] = [];
    for (let i = 0; i < params.publishes; i++) {
      const t0 = performance.now();
      await a.service.publish(OWNER, 'open', { item: { id: `s${i}`, payload: '<p xmlns="x"/>' } });
      alone.push(performance.now() - t0);
    }
    const burst = async (who: Array<{ service: PubsubService }>, tag: string): Promise<number> => {
      const t0 = performance.now();
      let next = 0;
      const worker = async (service: PubsubService): Promise<void> => {
        while (next < params.publishes) await service.publish(OWNER, 'open', { item: { id: `${tag}${next++}`, payload: '<p xmlns="x"/>' } });
      };
      await Promise.all(who.flatMap((m) => Array.from({ length: 10 }, () => worker(m.service))));
      return params.publishes / ((performance.now() - t0) / 1000);
    };
    const publishAlonePerSec = await burst([a], 'c');
    const publishBothPerSec = await burst([a, b], 'd');
    return {
      params,
      revokeMs: percentiles(revoke),
      subscriptionMs: percentiles(subscription),
      grantMs: percentiles(grant),
      publishAloneMs: percentiles(alone),
      publishAlonePerSec,
      publishBothPerSec,
    };
  } finally {
    for (const m of [a, b]) {
      await m.service.close();
      await m.store.close();
    }
    await couch.destroy();
  }
}

/** The Markdown section of the report. */
export function coherenceReport(r: CoherenceResult): { md: string } {
  const row = (what: string, p: Percentiles): string => `| ${what} | ${p.n} | ${p.p50.toFixed(1)} | ${p.p99.toFixed(1)} | ${p.max.toFixed(1)} |`;
  return {
    md: [
      '## Cluster: coherence (two stores on one pouchdb-server, one Node process)',
      '',
      'Time from a change acknowledged through A until B enforces it, ms (B asked about every ms).',
      '',
      '| change | n | p50 | p99 | max |',
      '|---|---|---|---|---|',
      row("member removed: gone from B's cache, B refuses it (changes feed)", r.revokeMs),
      row("subscription: B's owner list shows it (changes feed)", r.subscriptionMs),
      row('member added: B lets it read (reread on refusal)', r.grantMs),
      '',
      `Publication through one process, one after the other: p50 ${r.publishAloneMs.p50.toFixed(1)} ms, p99 ${r.publishAloneMs.p99.toFixed(1)} ms. ` +
        `10 concurrent to one node: ${r.publishAlonePerSec.toFixed(0)}/s from one process, ${r.publishBothPerSec.toFixed(0)}/s in all from both (the node's lock goes back and forth).`,
      '',
    ].join('\n'),
  };
}
