// Partners follow nodes created after their discovery, retry a failed discovery within seconds,
// rediscover on a contact edit, and resume a node's history from what they applied live — on two
// real sites: site A's Hermod on Prosody (alpha.test), site B's on ejabberd (beta.test), each with
// its own CouchDB-API server (Ajatus) and Midgard spools, federating over s2s. The discovery
// interval is an hour, so nothing here can come from the periodic discovery.

import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseMidgardXml } from '../../src/codecs/midgard.ts';
import type { CouchServer, HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

type Doc = Record<string, unknown> & { _id: string; _rev?: string };
type LogLine = Record<string, unknown>;

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';
const HOUR = 3600;
const ARTICLE = '29a8d8f0a9823c53fba2b3f96b59e8ec';
const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));

const note = (id: string, tags: string[]): Doc => ({
  _id: id,
  value: { _type: 'note', title: { val: id }, tags: { val: tags }, metadata: { creator: { val: 'alice' }, revised: { val: new Date().toISOString() }, deleted: { val: false } } },
});

async function get(server: CouchServer, id: string): Promise<Doc | undefined> {
  const { status, json } = await server.request('GET', `${CONTENT}/${encodeURIComponent(id)}`);
  return status === 200 ? (json as Doc) : undefined;
}

describe('partner discovery: new nodes, retries, contact edits and history positions', { timeout: 420_000 }, () => {
  const site = useSite({ name: 'discovery', couches: 2 });
  let couchA: CouchServer;
  let couchB: CouchServer;
  let dir: string;
  let alpha: ServerInfo;
  let beta: ServerInfo;
  let hermodA: HermodProcess | undefined;
  let hermodB: HermodProcess | undefined;

  /** A site's Hermod: Ajatus on its CouchDB, Midgard without a bus, discovery once an hour. */
  const startSite = (name: string, server: ServerInfo, couch: CouchServer, midgard: Record<string, unknown>): Promise<HermodProcess> =>
    site.hermod({
      server,
      name,
      extra: { appDb: { url: couch.url, db: APP }, ajatus: { discoveryIntervalSeconds: HOUR }, midgard: { bus: 'none', discoveryIntervalSeconds: HOUR, ...midgard } },
    });
  const startA = (): Promise<HermodProcess> =>
    startSite('site-a', alpha, couchA, { spool: './a-spool', inbound: './a-inbound', access: { '*': { access_model: 'whitelist', whitelist: [beta.componentJid] } } });
  const startB = (): Promise<HermodProcess> => startSite('site-b', beta, couchB, { inbound: './b-inbound', partners: ['alice@alpha.test'] });
  const arrives = (server: CouchServer, id: string, what: string): Promise<Doc> => eventually(() => get(server, id), what, 30_000);
  /** Log lines of a site written after `from` lines (the log file is appended to across restarts). */
  const linesAfter = async (h: HermodProcess, from: number): Promise<LogLine[]> => (await h.log()).slice(from);

  before(async () => {
    dir = site.dir;
    [couchA, couchB] = [site.couch(0), site.couch(1)];
    [alpha, beta] = [site.alpha, site.beta];
    await couchA.createDbs(APP, CONTENT);
    await couchB.createDbs(APP, CONTENT);
    // Each site whitelists the other's Hermod on 'shared'; A knows B's service, B knows alice at A.
    await couchA.put(APP, { _id: 'hermod:tag:shared', whitelist: [beta.componentJid] });
    await couchB.put(APP, { _id: 'hermod:tag:shared', whitelist: [alpha.componentJid] });
    await couchA.put(CONTENT, { _id: 'contact-b', value: { _type: 'contact', title: { val: 'Site B' }, jid: { val: beta.componentJid } } });
    await couchB.put(CONTENT, { _id: 'contact-alice', value: { _type: 'contact', title: { val: 'Alice' }, jid: { val: 'alice@alpha.test' } } });
    await couchA.put(CONTENT, note('seed-a', ['shared']));
    await couchB.put(CONTENT, note('seed-b', ['shared']));
    // B runs once alone: its node /tags/shared (A a member) exists before A ever looks at B.
    hermodB = await startB();
    await hermodB.waitForLog((l) => l.msg === 'published document' && l.doc === 'seed-b', 'seed-b published at B');
    await hermodB.stop();
    hermodB = undefined;
  });

  it('a discovery that failed because the partner was down is retried within seconds once it is up', async () => {
    hermodA = await startA();
    const failed = await hermodA.waitForLog((l) => l.msg === 'partner discovery failed' && l.partner === beta.componentJid, "A's discovery of B failing while B is down", 60_000);
    hermodB = await startB(); // nothing at B changes: B announces nothing to A
    await arrives(couchB, 'seed-a', "A's note at B");
    await eventually(() => get(couchA, 'seed-b'), "B's note at A (A's retried discovery)", 60_000);
    assert.equal(failed.retryInSeconds, 2, 'the first retry came after 2 s, not after the interval');
  });

  it("a new tag's first note at A reaches B without a restart or a discovery run", async () => {
    await couchA.put(APP, { _id: 'hermod:tag:fresh', whitelist: [beta.componentJid] });
    await couchA.put(CONTENT, note('fresh-a', ['fresh']));
    await arrives(couchB, 'fresh-a', 'the first note of a new tag at B');
    await couchA.put(CONTENT, note('fresh-a2', ['fresh']));
    await arrives(couchB, 'fresh-a2', 'the next note of that tag at B');
  });

  it("B's first note on a tag of its own reaches A", async () => {
    await couchB.put(APP, { _id: 'hermod:tag:from-b', whitelist: [alpha.componentJid] });
    await couchB.put(CONTENT, note('from-b-1', ['from-b']));
    await arrives(couchA, 'from-b-1', "B's first note of its new tag at A");
  });

  it("the first Midgard object of a class reaches the partner's inbound spool", async () => {
    const spool = path.join(dir, 'a-spool');
    await mkdir(spool, { recursive: true });
    await writeFile(path.join(spool, '.article.tmp'), await readFile(path.join(FIXTURES, 'article-hello.xml'), 'utf8'));
    await rename(path.join(spool, '.article.tmp'), path.join(spool, '0001.xml'));
    const inbound = path.join(dir, 'b-inbound');
    await eventually(
      async () => {
        const names = (await readdir(inbound).catch(() => [] as string[])).filter((n) => n.endsWith('.xml') && !n.startsWith('.'));
        const docs = await Promise.all(names.map(async (n) => parseMidgardXml(await readFile(path.join(inbound, n), 'utf8'))));
        return docs.some((d) => d.main?.guid === ARTICLE);
      },
      "the article in B's inbound spool",
      30_000,
    );
  });

  it('editing a contact (its JID unchanged) starts a discovery: B finds an open tag A created since', async () => {
    // An open node makes no one a member, so nothing announces it: only a discovery finds it.
    await couchA.put(APP, { _id: 'hermod:tag:public', access_model: 'open' });
    await couchA.put(CONTENT, note('public-1', ['public']));
    await hermodA?.waitForLog((l) => l.msg === 'published document' && l.doc === 'public-1', 'public-1 published at A');
    const contact = (await get(couchB, 'contact-alice')) as Doc;
    await couchB.put(CONTENT, { ...contact, value: { ...(contact.value as object), title: { val: 'Alice (site A)' } } });
    await arrives(couchB, 'public-1', 'the open tag’s note at B after the contact edit');
  });

  it('a restart replays only what was missed: nothing when nothing happened, the N entries published while down', async () => {
    const b = hermodB as HermodProcess;
    await couchA.put(CONTENT, note('live-1', ['shared']));
    await couchA.put(CONTENT, note('live-2', ['shared']));
    await arrives(couchB, 'live-2', 'live-2 at B');
    await arrives(couchB, 'live-1', 'live-1 at B');
    await b.stop();
    let from = (await b.log()).length;
    // Every node of A that B followed before the restart (Ajatus tags and the Midgard class).
    const followed = new Set((await b.log()).filter((l) => l.msg === 'subscribed to partner node' && l.service === alpha.componentJid).map((l) => l.node));
    assert.ok(followed.has('/tags/shared'));
    hermodB = await startB();
    const caughtUp = async (): Promise<LogLine[]> => (await linesAfter(hermodB as HermodProcess, from)).filter((l) => l.msg === 'caught up with partner node from its history');
    const quiet = await eventually(async () => {
      const lines = await caughtUp();
      const nodes = new Set(lines.map((l) => l.node));
      return [...followed].every((n) => nodes.has(n)) && lines;
    }, 'catch-up of every followed node of A after the restart', 30_000);
    assert.deepEqual(
      quiet.map((l) => [l.node, l.entries]).sort(),
      quiet.map((l) => [l.node, 0]).sort(),
      'every notification received while running was applied and remembered: nothing is replayed',
    );

    await (hermodB as HermodProcess).stop();
    from = (await (hermodB as HermodProcess).log()).length;
    for (const id of ['down-1', 'down-2', 'down-3']) await couchA.put(CONTENT, note(id, ['shared']));
    await hermodA?.waitForLog((l) => l.msg === 'published document' && l.doc === 'down-3', 'down-3 published at A');
    hermodB = await startB();
    const missed = await eventually(async () => (await caughtUp()).find((l) => l.node === '/tags/shared'), "B's catch-up of /tags/shared", 30_000);
    assert.equal(missed.entries, 3, 'the three publications made while B was down, and nothing else');
    for (const id of ['down-1', 'down-2', 'down-3']) await arrives(couchB, id, `${id} at B`);
  });
});
