// `hermod demo`: the main job on embedded defaults, for a newcomer. Two sites, each with its
// own CouchDB-API database (pouchdb-server) and its own Hermod: site A attached to Prosody
// (alpha.test), site B to ejabberd (beta.test), federating over s2s on loopback. Ajatus notes
// created, edited and deleted at A replicate to B through XMPP pub/sub; a note in a tag B is
// not whitelisted for stays home. Site A also runs Midgard replication: an article Midgard drops
// into A's spool becomes an Ajatus note at B through the shipped midgard2ajatus.xsl stylesheet
// (B's subscription to A's /midgard_article/all names it). Everything is stopped and removed.
//
// First the preflight (src/devenv/preflight.js): missing system packages are installed as root
// with apt-get (unless --no-install or HERMOD_NO_INSTALL=1), or named with the command to run
// (exit 2); not root exits 2 saying why root is needed. Ports taken by another server exit 2
// naming it; a server that fails to start exits 1 with the end of its log.

import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startCouch, type CouchServer } from '../devenv/couchdb.ts';
import { ensureSystemPackages } from '../devenv/preflight.js';
import { PortsBusyError, startXmppEnv, type ServerInfo, type XmppEnv } from '../devenv/index.ts';
import { validateConfig } from '../config/config.ts';
import { startHermod, type Hermod } from '../hermod.ts';
import { createLogger } from '../log.ts';

const say = (line: string): void => void process.stdout.write(`${line}\n`);
const CONTENT = 'ajatus_db_content';
const APP = 'ajatus_db';

type Doc = Record<string, unknown> & { _id: string; _rev?: string };

const couch = (server: CouchServer, method: string, p: string, body?: unknown): ReturnType<CouchServer['request']> => server.request(method, p, body);
const put = (server: CouchServer, db: string, doc: Doc): Promise<string> => server.put(db, doc);

const note = (id: string, title: string, tags: string[], rev?: string): Doc => ({
  _id: id,
  ...(rev ? { _rev: rev } : {}),
  value: { _type: 'note', title: { val: title }, tags: { val: tags }, metadata: { creator: { val: 'alice' }, revised: { val: new Date().toISOString() }, deleted: { val: false } } },
});

const ARTICLE_GUID = '3aed637e8a34b41530207f196c092800';
const ARTICLE = `<?xml version="1.0"?>
<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8">
  <midgard_article guid="${ARTICLE_GUID}" purge="no" action="created">
    <name>meetup</name>
    <title>Midgard meetup (written in Midgard at site A)</title>
    <abstract></abstract>
    <content>&lt;p&gt;See you there.&lt;/p&gt;</content>
    <topic>7702d2ef6962510d2245727f169fd2a2</topic>
    <up>0</up>
    <metadata>
      <creator>71140207f06e996d5c124d58e11fa3cd</creator>
      <created>2026-11-24 14:00:00+0000</created>
      <revised>2026-11-24 14:00:00+0000</revised>
      <revision>1</revision>
      <approved>0000-00-00 00:00:00+0000</approved>
      <deleted>0</deleted>
    </metadata>
  </midgard_article>
</midgard_object>
`;

/** Polls until `check` is true (bounded); returns whether it became true. */
async function until(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

async function titlesAt(server: CouchServer): Promise<string[]> {
  const { json } = await couch(server, 'GET', `${CONTENT}/_all_docs?include_docs=true`);
  return (json.rows as Array<{ doc: { value?: { _type?: string; title?: { val?: string } } } }>)
    .filter((r) => r.doc.value?._type === 'note')
    .map((r) => r.doc.value?.title?.val ?? '?')
    .sort();
}

/**
 * Runs the demo; returns the exit status: 0 all checks passed, 1 a check or a server failed,
 * 2 the machine is not ready (system packages, root, ports) and the message says what to do.
 */
export async function runDemo(opts: { noInstall?: boolean } = {}): Promise<number> {
  const ready = ensureSystemPackages({ what: 'hermod demo', noInstall: opts.noInstall ?? false, needsRoot: true });
  if (ready !== 0) return ready;
  let env: XmppEnv | undefined;
  const couches: CouchServer[] = [];
  const hermods: Hermod[] = [];
  const dataDir = await mkdtemp(path.join(tmpdir(), 'hermod-demo-'));
  let ok = true;
  const check = (label: string, passed: boolean): void => {
    ok &&= passed;
    say(`  ${passed ? '✔' : '✘'} ${label}`);
  };
  try {
    say('Starting Prosody (alpha.test) and ejabberd (beta.test) federating over s2s, and a CouchDB-API server per site…');
    // allSettled: whatever did start is stopped in `finally` even when another part failed.
    const [xmpp, ...couchStarts] = await Promise.allSettled([startXmppEnv(), startCouch(), startCouch()]);
    for (const c of couchStarts) if (c.status === 'fulfilled') couches.push(c.value);
    if (xmpp.status === 'rejected') throw xmpp.reason;
    env = xmpp.value;
    const couchFailed = couchStarts.find((c): c is PromiseRejectedResult => c.status === 'rejected');
    if (couchFailed) throw couchFailed.reason;
    const [couchA, couchB] = couches as [CouchServer, CouchServer];
    const alpha = env.alpha as ServerInfo;
    const beta = env.beta as ServerInfo;
    say(`  site A: Prosody on ${alpha.ip}, CouchDB at ${couchA.url}`);
    say(`  site B: ejabberd on ${beta.ip}, CouchDB at ${couchB.url}`);

    for (const c of [couchA, couchB]) await c.createDbs(APP, CONTENT);
    // Site A keeps everything Hermod needs in its application database, as Ajatus would.
    await put(couchA, APP, { _id: 'hermod:credentials', component: { jid: alpha.componentJid, secret: alpha.componentSecret, server: alpha.componentService } });
    await put(couchA, APP, { _id: 'hermod:tag:project', access_model: 'whitelist', whitelist: [beta.componentJid] });
    // Site B's partner is a person at A; Hermod discovers A's service on alpha.test.
    await put(couchB, CONTENT, { _id: 'contact-alice', value: { _type: 'contact', title: { val: 'Alice at site A' }, jid: { val: 'alice@alpha.test' } } });
    // What B follows of alice's site: the "project" tag, and Midgard articles turned into Ajatus notes by XSLT.
    await put(couchB, APP, { _id: 'hermod:partner:alice@alpha.test', follow: ['/tags/project', '/midgard_article/all'], transform: { '/midgard_article/all': { stylesheet: 'midgard2ajatus.xsl', params: { tags: 'midgard' } } } });
    say(`Site A whitelists site B (${beta.componentJid}) for tag "project"; site B has alice@alpha.test as a contact.`);

    const log = createLogger('warn');
    const dirA = path.join(dataDir, 'a');
    const dirB = path.join(dataDir, 'b');
    const spoolA = path.join(dirA, 'midgard-spool');
    await mkdir(spoolA, { recursive: true });
    const midgardA = { bus: 'none', spool: spoolA, inbound: path.join(dirA, 'midgard-inbound'), access: { '*': { access_model: 'whitelist', whitelist: [beta.componentJid] } } };
    hermods.push(await startHermod(validateConfig({ appDb: { url: couchA.url, db: APP }, dataDir: dirA, ajatus: { discoveryIntervalSeconds: 1 }, midgard: midgardA }, dirA), { log }));
    hermods.push(
      await startHermod(
        validateConfig({ component: { jid: beta.componentJid, secret: beta.componentSecret, server: beta.componentService }, appDb: { url: couchB.url, db: APP }, dataDir: dirB, ajatus: { discoveryIntervalSeconds: 1 } }, dirB),
        { log },
      ),
    );
    await Promise.all(hermods.map((h) => h.online));
    say(`Hermod A is ${alpha.componentJid} (credentials read from A's ajatus_db); Hermod B is ${beta.componentJid}.`);

    say('\nAt site A, alice writes notes:');
    const photo = Buffer.from('a tiny attachment, replicated byte for byte');
    await put(couchA, CONTENT, { ...note('note-1', 'Kick-off agenda', ['project']), _attachments: { 'agenda.txt': { content_type: 'text/plain', data: photo.toString('base64') } } });
    const rev2 = await put(couchA, CONTENT, note('note-2', 'Budget draft', ['project']));
    await put(couchA, CONTENT, note('note-3', 'Meeting notes', ['project', 'minutes']));
    await put(couchA, CONTENT, note('note-private', 'Diary (tag "private": B is not whitelisted)', ['private']));
    say('  note-1 "Kick-off agenda" (+ attachment), note-2 "Budget draft", note-3 "Meeting notes", note-private "Diary"');

    check('the three "project" notes arrive at site B over XMPP', await until(async () => (await titlesAt(couchB)).length === 3));
    const att = await fetch(`${couchB.url}/${CONTENT}/note-1/agenda.txt`);
    check('the attachment arrives byte for byte', att.ok && Buffer.from(await att.arrayBuffer()).equals(photo));
    const revAtB = (await couch(couchB, 'GET', `${CONTENT}/note-2`)).json._rev;
    check(`note-2 has the same revision at both sites (${String(revAtB).slice(0, 12)}…)`, revAtB === rev2);

    say('\nAt site A, alice edits note-2 and deletes note-3:');
    await put(couchA, CONTENT, note('note-2', 'Budget, final', ['project'], rev2));
    const n3 = (await couch(couchA, 'GET', `${CONTENT}/note-3`)).json._rev as string;
    await couch(couchA, 'DELETE', `${CONTENT}/note-3?rev=${n3}`);
    check('the edit and the deletion reach site B', await until(async () => JSON.stringify(await titlesAt(couchB)) === JSON.stringify(['Budget, final', 'Kick-off agenda'])));
    check('the private note never left site A', (await couch(couchB, 'GET', `${CONTENT}/note-private`)).status === 404);

    say('\nAt site A, Midgard publishes an article (its watcher drops the serialized object into Hermod\'s spool):');
    await writeFile(path.join(spoolA, '.meetup.tmp'), ARTICLE);
    await rename(path.join(spoolA, '.meetup.tmp'), path.join(spoolA, 'meetup.xml'));
    say(`  midgard_article ${ARTICLE_GUID} "Midgard meetup" -> node /midgard_article/all`);
    const fromMidgard = async (): Promise<Doc | undefined> => {
      const { status, json } = await couch(couchB, 'GET', `${CONTENT}/midgard-${ARTICLE_GUID}`);
      return status === 200 ? (json as Doc) : undefined;
    };
    check('it arrives at site B as an Ajatus note, transformed by midgard2ajatus.xsl', await until(async () => (await fromMidgard()) !== undefined));
    const mnote = (await fromMidgard())?.value as { _type?: string; tags?: { val?: unknown } } | undefined;
    check(`with Ajatus fields (type "${mnote?._type}", tags ${JSON.stringify(mnote?.tags?.val)})`, mnote?._type === 'note' && JSON.stringify(mnote.tags?.val) === '["midgard"]');

    say(`\nSite B's database now holds: ${(await titlesAt(couchB)).map((t) => `"${t}"`).join(', ')}`);
    say(ok ? '\nDemo OK: Ajatus and Midgard content replicated from site A to site B over XMPP publish/subscribe and federation.' : '\nDemo FAILED (see ✘ above).');
    return ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`hermod demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return err instanceof PortsBusyError ? 2 : 1;
  } finally {
    for (const h of hermods) await h.stop().catch(() => {});
    await env?.stop();
    for (const c of couches) await c.destroy();
    await rm(dataDir, { recursive: true, force: true });
    say('Stopped both Hermods, Prosody, ejabberd and both CouchDB servers; removed temp data.');
  }
}
