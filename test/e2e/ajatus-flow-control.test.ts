// Flow control for a partner's live notifications end to end (src/replication/follow-delivery.ts,
// leaveToHistory/drain): site B's bound (`ajatus.liveBacklogItems`) is set so low that a burst at
// site A outruns it; B leaves the notifications to A's node history (XEP-0313), pauses delivery
// (pubsub#deliver), reads the history back at its database's pace, resumes delivery and goes on
// live. Real pouchdb-servers, Prosody (A) and ejabberd (B) over s2s, real hermod processes.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { CouchServer, HermodProcess } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';

const note = (id: string): Record<string, unknown> & { _id: string } => ({
  _id: id,
  value: { _type: 'note', title: { val: id }, tags: { val: ['flow'] }, metadata: { creator: { val: 'alice' }, revised: { val: '2026-12-01T10:00:00Z' }, deleted: { val: false } } },
});

async function has(server: CouchServer, id: string): Promise<boolean> {
  return (await server.request('GET', `${CONTENT}/${encodeURIComponent(id)}`)).status === 200;
}

describe('a partner whose database falls behind reads the notifications back from the history', { timeout: 300_000 }, () => {
  const site = useSite({ name: 'ajflow', couches: 2 });
  let couchA: CouchServer;
  let couchB: CouchServer;
  let hermodB: HermodProcess;

  before(async () => {
    [couchA, couchB] = [site.couch(0), site.couch(1)];
    await couchA.createDbs(APP, CONTENT);
    await couchB.createDbs(APP, CONTENT);
    await couchA.put(APP, { _id: 'hermod:tag:flow', access_model: 'whitelist', whitelist: [site.beta.componentJid] });
    await couchB.put(CONTENT, { _id: 'contact-alice', value: { _type: 'contact', title: { val: 'Alice' }, jid: { val: 'alice@alpha.test' } } });
    await site.hermod({ server: site.alpha, name: 'site-a', extra: { appDb: { url: couchA.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } } });
    hermodB = await site.hermod({ server: site.beta, name: 'site-b', extra: { appDb: { url: couchB.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1, liveBacklogItems: 5, notificationDigestMs: 0 } } });
  });

  it('a burst beyond ajatus.liveBacklogItems: every document at B, read back from the history, and B live again after it', async () => {
    await couchA.put(CONTENT, note('first'));
    await eventually(() => has(couchB, 'first'), 'the first note at B (B follows /tags/flow)', 60_000);
    const burst = Array.from({ length: 400 }, (_, i) => note(`burst-${String(i).padStart(3, '0')}`));
    const { status } = await couchA.request('POST', `${CONTENT}/_bulk_docs`, { docs: burst });
    assert.ok(status < 300, '_bulk_docs at A');
    await hermodB.waitForLog((l) => l.msg === 'partner notifications arrive faster than they are written: reading the node from its history at our pace' && l.node === '/tags/flow', 'B leaves notifications to the history', 60_000);
    await hermodB.waitForLog((l) => l.msg === 'caught up with partner node from its history; applying its notifications as they arrive again' && l.node === '/tags/flow', 'B drained the history', 120_000);
    await eventually(async () => {
      const { json } = await couchB.request('POST', `${CONTENT}/_all_docs`, { keys: burst.map((d) => d._id) });
      return (json.rows as Array<{ value?: { rev: string } }>).every((r) => r.value?.rev !== undefined);
    }, 'all 400 notes of the burst at B', 120_000);
    // Delivery was resumed: a later edit arrives as a notification.
    await couchA.put(CONTENT, note('after'));
    await eventually(() => has(couchB, 'after'), 'a note written after the drain, at B', 60_000);
  });
});
