// The Ajatus source in a cluster: two Hermods serve one component JID on ejabberd and share one
// pouchdb-server store; both have the same application database. Only the work-lease holder
// runs the source (a tagged document is published once, as one item); when it is killed with
// SIGKILL the survivor takes the lease and the replication over, from the stored checkpoint: a
// document written afterwards is published by it.

import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { clusterStatusOf, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { eventually, PUBSUB, type TestClient } from './client.ts';
import { itemIds, useSite } from './fixtures.ts';

const APP = 'ajatus_db';
const CONTENT = 'ajatus_db_content';

const note = (id: string, tag: string): Record<string, unknown> & { _id: string } => ({
  _id: id,
  value: { _type: 'note', title: { val: id }, tags: { val: [tag] }, metadata: { creator: { val: 'alice' }, revised: { val: new Date().toISOString() }, deleted: { val: false } } },
});

describe('Ajatus source in a cluster of two Hermods', { timeout: 240_000 }, () => {
  const site = useSite({ name: 'cluster-ajatus', prosody: false, couches: 1 });
  let home: ServerInfo;
  const hermods: HermodProcess[] = [];
  let alice: TestClient;
  let SVC: string;

  before(async () => {
    home = site.beta;
    SVC = home.componentJid;
    const couch = site.couch();
    await couch.createDbs(APP, CONTENT);
    const extra = { store: { backend: 'couchdb', couchdb: { url: couch.url, db: 'hermod' } }, cluster: { leaseSeconds: 2 }, appDb: { url: couch.url, db: APP } };
    for (const name of ['h1', 'h2']) hermods.push(await site.hermod({ server: home, name, logLevel: 'info', admins: [`alice@${home.domain}`], extra }));
    alice = await site.user(home, 'alice');
  });

  const itemsOf = async (node: string): Promise<string[]> => {
    const reply = await alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='${node}'/></pubsub>`).catch(() => undefined);
    return reply ? itemIds(reply) : [];
  };

  it('runs the source in the lease holder only, and in the survivor once the holder is killed', async () => {
    const couch = site.couch();
    const leader = await eventually(async () => {
      for (const h of hermods) if ((await clusterStatusOf(h))?.leases[0]?.heldHere) return h;
      return undefined;
    }, 'a lease holder', 30_000);
    const survivor = hermods.find((h) => h !== leader) as HermodProcess;
    const started = async (h: HermodProcess): Promise<number> => (await h.log()).filter((l) => l.msg === 'replication starts here: this process holds the work lease').length;
    assert.equal(await started(survivor), 0, 'the other process does not replicate');

    await couch.put(CONTENT, note('n1', 'x'));
    await eventually(async () => (await itemsOf('/tags/x')).includes('n1') || undefined, 'n1 published by the lease holder', 60_000);

    await leader.kill();
    await eventually(async () => (await started(survivor)) > 0 || undefined, 'the survivor starts the replication', 30_000);
    await couch.put(CONTENT, note('n2', 'x'));
    await eventually(async () => (await itemsOf('/tags/x')).includes('n2') || undefined, 'n2 published by the survivor', 60_000);
    assert.deepEqual((await itemsOf('/tags/x')).sort(), ['n1', 'n2'], 'each document once');
  });
});
