// Three sites replicating in a triangle (each follows the other two): A = Hermod on Prosody,
// B = Hermod on ejabberd, C = a second Hermod component on Prosody, each with its own
// CouchDB-API server. A randomized workload of 500 creates/updates/deletes spread over the three
// sites must converge to the same live documents (same winning revision, same conflicts) and the
// number of publishes must stay close to the number of edits (no echo storm).

import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { CouchServer, HermodProcess, ServerInfo } from '../../src/devenv/index.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';
const OPS = 500;
const POOL = 60;

interface Site {
  name: string;
  couch: CouchServer;
  server: ServerInfo;
  hermod?: HermodProcess;
}

const req = (couch: CouchServer, method: string, p: string, body?: unknown): ReturnType<CouchServer['request']> => couch.request(method, p, body);

/** A deterministic pseudo-random sequence, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Live documents of a site: id -> "winning rev | sorted conflicts". */
async function snapshot(couch: CouchServer): Promise<Map<string, string>> {
  const res = await req(couch, 'GET', `${CONTENT}/_all_docs?include_docs=true&conflicts=true`);
  const out = new Map<string, string>();
  for (const row of res.json.rows as Array<{ id: string; doc: { _rev: string; _conflicts?: string[] } }>) {
    if (row.id.startsWith('doc-')) out.set(row.id, `${row.doc._rev} | ${[...(row.doc._conflicts ?? [])].sort().join(',')}`);
  }
  return out;
}

const sites: Site[] = [];

const triangle = useSite({ name: 'triangle', extraComponents: ['site-c'], couches: 3 }, async () => {
  const couches = triangle.couches;
  const alpha = triangle.alpha;
  const beta = triangle.beta;
  const extra = alpha.extraComponents[0] as { jid: string; secret: string };
  const siteC: ServerInfo = { ...alpha, componentJid: extra.jid, componentSecret: extra.secret };
  sites.push({ name: 'a', couch: couches[0] as CouchServer, server: alpha }, { name: 'b', couch: couches[1] as CouchServer, server: beta }, { name: 'c', couch: couches[2] as CouchServer, server: siteC });
  for (const site of sites) {
    await site.couch.createDbs(APP, CONTENT);
    const others = sites.filter((s) => s !== site);
    await req(site.couch, 'PUT', `${APP}/hermod:tag:shared`, { access_model: 'whitelist', whitelist: others.map((o) => o.server.componentJid) });
    for (const o of others) await req(site.couch, 'PUT', `${CONTENT}/contact-${o.name}`, { value: { _type: 'contact', jid: { val: o.server.componentJid } } });
  }
  for (const site of sites) {
    site.hermod = await triangle.hermod({
      server: site.server,
      name: `site-${site.name}`,
      extra: { appDb: { url: site.couch.url, db: APP }, ajatus: { discoveryIntervalSeconds: 1 } },
    });
  }
  // Every site follows the other two before the workload starts (nodes exist once a tag is used).
  for (const site of sites) await req(site.couch, 'PUT', `${CONTENT}/doc-seed-${site.name}`, { value: { _type: 'note', tags: { val: ['shared'] } } });
  await eventually(
    async () => {
      for (const site of sites) if ((await snapshot(site.couch)).size < 3) return false;
      return true;
    },
    'seed documents everywhere (triangle subscribed)',
    60_000,
  );
});

it(`${OPS} random operations over three sites converge, with publishes close to edits`, { timeout: 240_000 }, async () => {
  const random = rng(20261125);
  let edits = 0;
  for (let i = 0; i < OPS; i++) {
    const site = sites[Math.floor(random() * sites.length)] as Site;
    const id = `doc-${Math.floor(random() * POOL)}`;
    const current = await req(site.couch, 'GET', `${CONTENT}/${id}`);
    const roll = random();
    if (current.status === 200 && roll < 0.1) {
      const del = await req(site.couch, 'DELETE', `${CONTENT}/${id}?rev=${current.json._rev as string}`);
      if (del.status < 300) edits++;
    } else {
      const body = { ...(current.status === 200 ? { _rev: current.json._rev } : {}), value: { _type: 'note', title: { val: `op ${i} at ${site.name}` }, tags: { val: ['shared'] } } };
      const put = await req(site.couch, 'PUT', `${CONTENT}/${id}`, body);
      if (put.status < 300) edits++;
    }
  }
  const [a, b, c] = sites as [Site, Site, Site];
  let diff = '';
  await eventually(
    async () => {
      const [sa, sb, sc] = await Promise.all([snapshot(a.couch), snapshot(b.couch), snapshot(c.couch)]);
      const ids = new Set([...sa.keys(), ...sb.keys(), ...sc.keys()]);
      const differing = [...ids].filter((id) => !(sa.get(id) === sb.get(id) && sa.get(id) === sc.get(id)));
      diff = differing.slice(0, 5).map((id) => `${id}: a=${sa.get(id)} b=${sb.get(id)} c=${sc.get(id)}`).join('\n');
      return differing.length === 0;
    },
    'the three databases to converge',
    60_000,
  ).catch(async (err: Error) => {
    // What each Hermod said about the first differing documents, and its warnings and errors:
    // enough to tell a lost notification from a refused or failed write.
    const ids = diff.split('\n').map((line) => line.split(':')[0]).filter((id): id is string => !!id).slice(0, 3);
    const said: string[] = [];
    for (const site of sites) {
      const lines = (await site.hermod?.log()) ?? [];
      const about = lines.filter((l) => ids.includes(String(l.doc ?? l.item ?? l.id ?? '')) || (typeof l.level === 'number' && l.level >= 40));
      for (const l of about.slice(-25)) said.push(`${site.name}: ${JSON.stringify(l).slice(0, 400)}`);
    }
    throw new Error(`${err.message}\n${diff}\n${said.join('\n')}`);
  });
  const final = await snapshot(a.couch);
  assert.ok(final.size > 10, `a meaningful number of live documents (${final.size})`);
  let publishes = 0;
  for (const site of sites) publishes += ((await site.hermod?.log()) ?? []).filter((l) => l.msg === 'published document').length;
  assert.ok(publishes <= edits * 1.5 + 3, `publishes (${publishes}) stay within 1.5× the edits (${edits})`);
});

it('a retraction from one partner does not delete at a third site the newer revision the other partner still publishes', { timeout: 120_000 }, async () => {
  const [a, b, c] = sites as [Site, Site, Site];
  const id = 'doc-two-sources';
  const revAt = async (site: Site): Promise<string | undefined> => {
    const res = await req(site.couch, 'GET', `${CONTENT}/${id}`);
    return res.status === 200 ? (res.json._rev as string) : undefined;
  };
  const outcome = (l: Record<string, unknown>): boolean => l.doc === id && ['document deleted by partner retraction', 'partner retraction: document kept', 'retraction not applied: the document changed meanwhile'].includes(String(l.msg));
  const first = String((await req(a.couch, 'PUT', `${CONTENT}/${id}`, { value: { _type: 'note', title: { val: 'from a' }, tags: { val: ['shared'] } } })).json.rev);
  await eventually(async () => (await revAt(b)) === first && (await revAt(c)) === first, 'the note at b and c', 30_000);
  // c edits it: b gets c's revision from c.
  const edited = String((await req(c.couch, 'PUT', `${CONTENT}/${id}`, { _rev: first, value: { _type: 'note', title: { val: 'edited at c' }, tags: { val: ['shared'] } } })).json.rev);
  await eventually(async () => (await revAt(b)) === edited && (await revAt(a)) === edited, "c's edit at a and b", 30_000);
  // a takes the tag off: a retracts the item from its node; c still publishes it.
  const handled = ((await b.hermod?.log()) ?? []).filter(outcome).length;
  await req(a.couch, 'PUT', `${CONTENT}/${id}`, { _rev: edited, value: { _type: 'note', title: { val: 'edited at c' }, tags: { val: [] } } });
  await eventually(async () => ((await b.hermod?.log()) ?? []).filter(outcome).length > handled, "a's retraction handled at b", 30_000);
  assert.equal(await revAt(b), edited, "b keeps c's revision (c's node still carries it)");
});
