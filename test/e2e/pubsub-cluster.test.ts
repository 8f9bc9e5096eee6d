// Two Hermod processes serving one component JID on ejabberd (which balances the component's
// stanzas between its connections at random: any request may reach either process), sharing
// one CouchDB-API store (pouchdb-server). First the whole XEP-0060 suite as a user sees the
// service; then cache coherence: what is changed through one process is enforced by the other.
// The balancing cannot be chosen per request, so each check is asked many times (both
// processes answer; the logs prove it) and must hold every time.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventually, expectIqError, isItemEvent, OWNER, PUBSUB, type TestClient } from './client.ts';
import { configure, create, itemIds, items, publish, Site, subscribe } from './fixtures.ts';
import { pubsubSuite, type SuiteSite } from './pubsub-suite.ts';

/** Requests asked again and again so that both processes answer (all on one: 2^-(n-1)). */
const TIMES = 16;

/** ejabberd (home) and Prosody, a pouchdb-server, and two Hermods with the same component JID on the one store. */
async function clusterSite(name: string): Promise<{ site: Site; home: ServerInfo; remote: ServerInfo; hermods: HermodProcess[] }> {
  const site = new Site({ name, couches: 1 });
  try {
    await site.start();
    const home = site.beta;
    const extra = { store: { backend: 'couchdb', couchdb: { url: site.couch().url, db: 'hermod' } } };
    const hermods: HermodProcess[] = [];
    for (const n of ['hermod-a', 'hermod-b']) hermods.push(await site.hermod({ server: home, name: n, admins: [`admin@${home.domain}`], extra }));
    return { site, home, remote: site.alpha, hermods };
  } catch (err) {
    await site.stop();
    throw err;
  }
}

/** How many requests each Hermod refused so far (its log says so at debug level). */
async function refusals(hermods: HermodProcess[]): Promise<number[]> {
  return Promise.all(hermods.map(async (h) => (await h.log()).filter((l) => l.msg === 'request refused').length));
}

pubsubSuite(
  'two Hermods on ejabberd sharing one CouchDB store',
  async (): Promise<SuiteSite> => {
    const { site, home, remote } = await clusterSite('e2e-cluster');
    return { SVC: home.componentJid, connect: (where, user, resource) => site.user(where === 'home' ? home : remote, user, resource), stop: () => site.stop() };
  },
  {
    processes: false,
    digestsPerProcess: true,
    // 10 000 publications to one node through two processes take the node's lock in turns, two to
    // four CouchDB requests each: far beyond the case's time budget. Racing publications are
    // checked in test/unit/cluster-cache.test.ts.
    skipBigNode: 'publishing 10 000 items to one node through a shared CouchDB store takes minutes',
  },
);

describe('two Hermods on one store: what one changes, the other enforces', { timeout: 180_000 }, () => {
  let site: Site;
  let hermods: HermodProcess[];
  let SVC: string;
  let alice: TestClient; // owner
  let carol: TestClient; // local
  let bob: TestClient; // remote, over s2s

  before(async () => {
    const started = await clusterSite('e2e-cluster-cache');
    ({ site, hermods } = started);
    SVC = started.home.componentJid;
    [alice, carol, bob] = await Promise.all([site.user(started.home, 'alice'), site.user(started.home, 'carol'), site.user(started.remote, 'bob')]);
  });
  after(() => site?.stop());

  /** `ask` TIMES times one after the other. */
  const repeat = async (ask: () => Promise<unknown>): Promise<void> => {
    for (let i = 0; i < TIMES; i++) await ask();
  };

  it('a member added through either process may read through both; once removed, neither lets it read', async () => {
    await alice.iq('set', SVC, create('wl', { access_model: 'whitelist' }));
    await alice.iq('set', SVC, publish('wl', 'w1'));
    const before = await refusals(hermods);
    await repeat(() => expectIqError(carol.iq('get', SVC, items('wl')), 'not-allowed', 'closed-node')); // both cache the node
    const after = await refusals(hermods);
    assert.ok(
      after.every((n, i) => n > (before[i] as number)),
      `both processes answered (refusals per process: ${before.join('/')} -> ${after.join('/')})`,
    );
    await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><affiliations node='wl'><affiliation jid='${carol.bare}' affiliation='member'/></affiliations></pubsub>`);
    await repeat(async () => assert.deepEqual(itemIds(await carol.iq('get', SVC, items('wl'))), ['w1']));
    await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><affiliations node='wl'><affiliation jid='${carol.bare}' affiliation='none'/></affiliations></pubsub>`);
    // A grant is reread at once; a revocation reaches the other process through the changes feed.
    await eventually(async () => {
      await repeat(() => expectIqError(carol.iq('get', SVC, items('wl')), 'not-allowed', 'closed-node'));
      return true;
    }, 'carol refused by both processes');
  });

  it('an access-model change through one process is enforced by both', async () => {
    await alice.iq('set', SVC, create('am', { access_model: 'whitelist' }));
    await alice.iq('set', SVC, publish('am', 'a1'));
    await repeat(() => expectIqError(bob.iq('get', SVC, items('am')), 'not-allowed', 'closed-node'));
    await alice.iq('set', SVC, configure('am', { access_model: 'open' }));
    await repeat(async () => assert.deepEqual(itemIds(await bob.iq('get', SVC, items('am'))), ['a1']));
    await bob.iq('set', SVC, subscribe('am', bob.jid));
  });

  it("a subscription made through one process is notified by both and shows in the owner's list of both; ended, it gets nothing", async () => {
    await alice.iq('set', SVC, create('sub'));
    await alice.iq('set', SVC, create('fence'));
    const subscriptionsOf = async (): Promise<string[]> =>
      ((await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><subscriptions node='sub'/></pubsub>`)).getChild('pubsub', OWNER)?.getChild('subscriptions')?.getChildren('subscription') ?? []).map((s) => s.attrs.jid as string);
    await repeat(async () => assert.deepEqual(await subscriptionsOf(), [])); // both cache the node
    await bob.iq('set', SVC, subscribe('sub', bob.jid));
    await bob.iq('set', SVC, subscribe('fence', bob.jid));
    // Every publication, whichever process takes it, reaches the new subscriber.
    for (let i = 0; i < TIMES; i++) await alice.iq('set', SVC, publish('sub', `s${i}`));
    for (let i = 0; i < TIMES; i++) await bob.waitForMessage(isItemEvent('sub', `s${i}`), 10_000, `notification s${i}`);
    await eventually(async () => {
      await repeat(async () => assert.deepEqual(await subscriptionsOf(), [bob.jid]));
      return true;
    }, "bob in the owner's list of both processes");
    await bob.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><unsubscribe node='sub' jid='${bob.jid}'/></pubsub>`);
    for (let i = 0; i < TIMES; i++) await alice.iq('set', SVC, publish('sub', `gone${i}`));
    await alice.iq('set', SVC, publish('fence', 'f1'));
    await bob.waitForMessage(isItemEvent('fence', 'f1'));
    assert.deepEqual(
      bob.received((m) => [...Array(TIMES).keys()].some((i) => isItemEvent('sub', `gone${i}`)(m))),
      [],
      'nothing after the unsubscription',
    );
  });
});
