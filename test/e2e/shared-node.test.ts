// Ajatus and Midgard replication in one Hermod following the same partner node. Site A runs both
// (Hermod on Prosody: Ajatus on its own pouchdb databases, Midgard on a private dbus-daemon with
// an inbound spool); its Ajatus follows every tag of site B (Hermod on ejabberd, Ajatus), its
// Midgard follows B's /tags/news through ajatus2midgard.xsl. They share A's component JID and so
// one subscription: each live notification must reach both (before, the first replication that
// followed the node took it, and Midgard got /tags/news only from catch-ups after a restart).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseMidgardXml } from '../../src/codecs/midgard.ts';
import type { CouchServer, HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const TOPIC_NEWS = '51bd22ef3b8b066c7e72680ab6ad8845';
const md5 = (s: string): string => createHash('md5').update(s).digest('hex');
type Doc = Record<string, unknown> & { _id: string; _rev?: string };

const note = (id: string, title: string, tags: string[]): Doc => ({
  _id: id,
  value: { _type: 'note', title: { val: title }, content: { val: `Body of ${title}` }, tags: { val: tags }, metadata: { creator: { val: 'bob' }, created: { val: '2026-12-02T09:00:00.000Z' }, revised: { val: '2026-12-02T09:00:00.000Z' }, deleted: { val: false } } },
});

describe('Ajatus and Midgard in one Hermod following the same partner node', { timeout: 300_000 }, () => {
  const site = useSite({ name: 'shared-node', couches: 1 });
  let couch: CouchServer;
  let alpha: ServerInfo;
  let beta: ServerInfo;
  let hermodA: HermodProcess;
  let inboundA: string;

  before(async () => {
    couch = site.couch();
    alpha = site.alpha;
    beta = site.beta;
    const bus = await site.dbus('bus');
    inboundA = path.join(site.dir, 'a-inbound');
    await couch.createDbs('a_app', 'a_content', 'ajatus_db', 'ajatus_db_content');
    // B: /tags/news and /tags/other readable by A's service.
    for (const tag of ['news', 'other']) await couch.put('ajatus_db', { _id: `hermod:tag:${tag}`, access_model: 'whitelist', whitelist: [alpha.componentJid] });
    // A's Ajatus knows site B as a contact: it follows all of B's tags.
    await couch.put('a_content', { _id: 'contact-site-b', value: { _type: 'contact', title: { val: 'Site B' }, jid: { val: beta.componentJid } } });
    await site.hermod({ server: beta, name: 'site-b', extra: { appDb: { url: couch.url, db: 'ajatus_db' }, ajatus: { discoveryIntervalSeconds: 1 } } });
    hermodA = await site.hermod({
      server: alpha,
      name: 'site-a',
      extra: {
        appDb: { url: couch.url, db: 'a_app' },
        ajatus: { contentDb: 'a_content', discoveryIntervalSeconds: 1 },
        midgard: {
          bus: bus.address,
          inbound: './a-inbound',
          topicsExport: path.join(FIXTURES, 'topics-export.xml'),
          nodes: { paths: [{ node: '/site/news', regexp: '^/site/news/' }] },
          partners: [{ jid: beta.componentJid, follow: ['/tags/news'], transform: { '/tags/news': { stylesheet: 'ajatus2midgard.xsl', params: { 'topic-guid': TOPIC_NEWS } } } }],
          discoveryIntervalSeconds: 1,
        },
      },
    });
  });

  it('a note B publishes to /tags/news once both follow it reaches both, live: A’s content database and A’s Midgard spool', async () => {
    // B's first note in the tag makes the node; both replications at A follow it (the second
    // one's subscribe answers with the subscription the first made) and catch up.
    await couch.put('ajatus_db_content', note('seed-1', 'First news', ['news']));
    await eventually(async () => (await hermodA.log()).filter((l) => l.msg === 'subscribed to partner node' && l.node === '/tags/news').length >= 2, 'both replications at A following /tags/news', 60_000);
    await eventually(async () => (await hermodA.log()).filter((l) => (l.msg === 'caught up with partner node' || l.msg === 'caught up with partner node from its history') && l.node === '/tags/news').length >= 2, 'both caught up', 60_000);
    const rev = await couch.put('ajatus_db_content', note('shared-1', 'Shared news', ['news']));
    await eventually(async () => {
      const { status, json } = await couch.request('GET', 'a_content/shared-1');
      return status === 200 && json._rev === rev;
    }, 'the note in A’s content database (Ajatus)', 30_000);
    const article = await eventually(async () => {
      const names = (await readdir(inboundA).catch(() => [] as string[])).filter((n) => n.endsWith('.xml') && !n.startsWith('.'));
      for (const name of names) {
        const doc = parseMidgardXml(await readFile(path.join(inboundA, name), 'utf8'));
        if (doc.main?.guid === md5('shared-1')) return doc;
      }
      return undefined;
    }, 'the note in A’s Midgard spool as an article (ajatus2midgard.xsl)', 30_000);
    assert.equal(article.main?.fields.title, 'Shared news');
  });
});
