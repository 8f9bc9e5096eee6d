// Operations end to end, against real Prosody, a real pouchdb-server and the real `hermod`
// process: `hermod check` (config, store, component handshake), `hermod status` over the unix
// socket, Prometheus /metrics on loopback, `hermod migrate --from level --to couchdb` and a
// restart on the CouchDB store, and bounce handling (XEP-0060 §4.4) for a subscriber whose
// domain does not exist. Secrets never show in output, logs or metrics.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import nano from 'nano';
import { before, describe, it } from 'node:test';
import { freePort, hermodCli, startCouch, startHermodProcess, writeHermodConfig, type CouchServer, type HermodProcess, type ServerInfo } from '../../src/devenv/index.ts';
import { ReplicationState } from '../../src/replication/state.ts';
import { CouchKv } from '../../src/store/couchdb.ts';
import { KvStore } from '../../src/store/kv-store.ts';
import { LevelStore } from '../../src/store/level.ts';
import { eventually, isItemEvent, OWNER, PUBSUB, type TestClient } from './client.ts';
import { itemIds, publish, useSite } from './fixtures.ts';

const COUCH_PASSWORD = 'couch-Pa55-word';

describe('operations: check, status, metrics, migrate, bounces', { timeout: 120_000 }, () => {
  const site = useSite({ name: 'ops', ejabberd: false, couches: 1 });
  let home: ServerInfo;
  let couch: CouchServer;
  let dir: string;
  let hermod: HermodProcess | undefined;
  let alice: TestClient;
  let metricsPort: number;
  let couchUrl: string;
  let SVC: string;

  before(async () => {
    dir = site.dir;
    couch = site.couch();
    home = site.alpha;
    SVC = home.componentJid;
    // A CouchDB admin with a password: the URL carries real credentials, which must never show.
    const admin = await fetch(`${couch.url}/_config/admins/hermod`, { method: 'PUT', body: JSON.stringify(COUCH_PASSWORD) });
    assert.equal(admin.status, 200);
    const url = new URL(couch.url);
    url.username = 'hermod';
    url.password = COUCH_PASSWORD;
    couchUrl = url.toString();
    metricsPort = await freePort();
    alice = await site.user(home, 'alice');
  });

  it('check: passes on a good config; names the failing part (secret, server, store, application databases) with exit 1, and never prints the secret', async () => {
    const good = await writeHermodConfig({ server: home, dir, name: 'check-good' });
    const ok = await hermodCli('check', '--config', good);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /ok +config/);
    assert.match(ok.stdout, /ok +store +LevelDB .*: 0 nodes/);
    assert.match(ok.stdout, new RegExp(`ok +xmpp +handshake with ${home.componentService.replace(/[.]/g, '\\.')} as ${SVC}`));

    const wrongSecret = await writeHermodConfig({ server: { ...home, componentSecret: 'not-the-secret-xyz' }, dir, name: 'check-secret' });
    const refused = await hermodCli('check', '--config', wrongSecret);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /FAIL +xmpp .*not-authorized/);
    assert.doesNotMatch(refused.stdout + refused.stderr, /not-the-secret-xyz/);

    const noServer = await writeHermodConfig({ server: { ...home, componentService: 'xmpp://127.0.0.1:1' }, dir, name: 'check-port' });
    const down = await hermodCli('check', '--config', noServer);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /FAIL +xmpp +xmpp:\/\/127\.0\.0\.1:1 .*ECONNREFUSED/);

    const badStore = await writeHermodConfig({ server: home, dir, name: 'check-store', extra: { store: { backend: 'couchdb', couchdb: { url: 'http://hermod:' + COUCH_PASSWORD + '@127.0.0.1:1', db: 'hermod' } } } });
    const storeDown = await hermodCli('check', '--config', badStore);
    assert.equal(storeDown.code, 1);
    assert.match(storeDown.stderr, /FAIL +store +CouchDB http:\/\/\*\*\*@127\.0\.0\.1:1\/hermod: .*ECONNREFUSED/);
    assert.doesNotMatch(storeDown.stdout + storeDown.stderr, new RegExp(COUCH_PASSWORD));

    // Replication: the application database and the content database must both be readable.
    const server = nano(couchUrl); // the server has an admin now: create with its credentials
    await server.db.create('check_app');
    const noContent = await writeHermodConfig({ server: home, dir, name: 'check-appdb', extra: { appDb: { url: couchUrl, db: 'check_app' }, ajatus: { contentDb: 'check_content' } } });
    const missing = await hermodCli('check', '--config', noContent);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /FAIL +appDb +content database 'check_content': does not exist \(create it, or set ajatus\.contentDb\)/);
    assert.doesNotMatch(missing.stdout + missing.stderr, new RegExp(COUCH_PASSWORD));
    await server.db.create('check_content');
    const present = await hermodCli('check', '--config', noContent);
    assert.equal(present.code, 0, present.stderr);
    assert.match(present.stdout, /ok +appDb +'check_app' readable; content database 'check_content': 0 documents/);

    const badConfig = await writeHermodConfig({ server: home, dir, name: 'check-config', extra: { store: { backend: 'sqlite' } } });
    const invalid = await hermodCli('check', '--config', badConfig);
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /store\.backend: must be "level" or "couchdb"/);
  });

  it('start waits for a CouchDB that is not up yet (application database, CouchDB store) instead of exiting; SIGTERM meanwhile is a clean stop', async () => {
    // A boot where Hermod comes before its CouchDB: it must neither exit with status 2 (which
    // deploy/hermod.service does not restart) nor crash, but wait and start once CouchDB answers.
    const late = await startCouch();
    const url = late.url;
    await late.stop();
    let waiting: HermodProcess | undefined;
    try {
      waiting = await startHermodProcess({ server: home, dir, name: 'wait-appdb', waitOnline: false, extra: { appDb: { url, db: 'wait_app' }, ajatus: { contentDb: 'wait_content' } } });
      const said = await waiting.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('application database not reachable'), 'the wait for the application database logged');
      assert.equal(said.level, 50, 'at error level');
      assert.equal(said.key, 'appDb.url');
      assert.match(String(said.msg), /is CouchDB running at appDb\.url\?/);
      assert.match(String(said.reason), /ECONNREFUSED/);
      assert.equal(await waiting.stop(), 0, 'SIGTERM while waiting: status 0 (not 2)');

      waiting = await startHermodProcess({ server: home, dir, name: 'wait-store', waitOnline: false, extra: { store: { backend: 'couchdb', couchdb: { url, db: 'wait_state' } } } });
      await waiting.waitForLog((l) => l.level === 50 && typeof l.msg === 'string' && l.msg.startsWith('CouchDB store not reachable') && l.key === 'store.couchdb.url', 'the wait for the CouchDB store logged');
      await waiting.waitForLog((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.startsWith('CouchDB store still not reachable'), 'a second attempt, at warn', 10_000);
      await late.start(); // CouchDB comes up
      await waiting.waitForLog((l) => l.msg === 'component online', 'online once CouchDB answers', 60_000);
      await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='late-couch'/></pubsub>`);
      const nodes = await nano(url).use('wait_state').info();
      assert.ok(nodes.doc_count > 0, 'the store is on the CouchDB that came up');
      assert.equal(await waiting.stop(), 0);
      waiting = undefined;

      // A CouchDB that answers but refuses (wrong password) is no reason to wait: a config error
      // (status 2: restarting will not fix it), one line.
      const wrong = new URL(couchUrl);
      wrong.password = 'not-the-password';
      const refusedConfig = await writeHermodConfig({ server: home, dir, name: 'wait-refused', extra: { store: { backend: 'couchdb', couchdb: { url: wrong.toString(), db: 'hermod' } } } });
      const refused = await hermodCli('start', '--config', refusedConfig);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /^hermod: store\.couchdb: CouchDB http:\/\/\*\*\*@127\.0\.0\.1:\d+\/hermod: opening the database failed: CouchDB refused the credentials \(HTTP 401\): check the user:password in store\.couchdb\.url$/m);
      assert.doesNotMatch(refused.stderr, /^\s+at /m, 'no stack trace');
      assert.doesNotMatch(refused.stdout + refused.stderr, /not-the-password/);
    } finally {
      if (waiting && !waiting.exited()) await waiting.kill();
      await late.destroy();
    }
  });

  it('status and metrics: a running instance reports connection, nodes, subscriptions and queues; /metrics counts stanzas, errors, notifications', async () => {
    // The port was free when freePort asked; another test file's server may have taken it since:
    // Hermod then exits naming metrics.port and EADDRINUSE, and a fresh port is tried (up to 5).
    for (let attempt = 1; ; attempt++) {
      try {
        hermod = await site.hermod({ server: home, extra: { metrics: { port: metricsPort } } });
        break;
      } catch (err) {
        if (attempt >= 5 || !/metrics\.port: cannot listen .*EADDRINUSE/.test(String(err))) throw err;
        metricsPort = await freePort();
      }
    }
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><create node='news'/></pubsub>`);
    await alice.iq('set', SVC, `<pubsub xmlns='${PUBSUB}'><subscribe node='news' jid='${alice.bare}'/></pubsub>`);
    await alice.iq('set', SVC, publish('news', 'one'));
    await alice.waitForMessage(isItemEvent('news', 'one'));
    await alice.iq('get', SVC, `<nonsense xmlns='urn:example:unknown'/>`).catch(() => undefined); // service-unavailable

    const configFile = path.join(dir, 'hermod.json');
    const status = await hermodCli('status', '--config', configFile);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /connection +online/);
    assert.match(status.stdout, /nodes +1\n/);
    assert.match(status.stdout, /subscriptions +1\n/);
    assert.match(status.stdout, /outbox +0 pending, \d+ sent, 0 dropped/);
    const json = JSON.parse((await hermodCli('status', '--config', configFile, '--json')).stdout) as { jid: string; nodes: number; queues: { outboxPending: number } };
    assert.deepEqual([json.jid, json.nodes, json.queues.outboxPending], [SVC, 1, 0]);

    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    const value = (pattern: string): number => Number(new RegExp(`^${pattern} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    assert.ok(value('hermod_stanzas_in_total\\{type="iq-set"\\}') >= 3, 'iq-set counted');
    assert.ok(value('hermod_stanzas_out_total\\{type="iq-result"\\}') >= 3);
    assert.equal(value('hermod_errors_total\\{condition="service-unavailable"\\}'), 1);
    assert.ok(value('hermod_notifications_queued_total') >= 1);
    assert.ok(value('hermod_notifications_sent_total') >= 1);
    assert.ok(value('hermod_fanout_duration_seconds_count\\{event="items"\\}') >= 1);
    assert.equal(value('hermod_connection_state\\{state="online"\\}'), 1);
    assert.ok(value('hermod_store_size_bytes') > 0);
    assert.ok(value('hermod_process_resident_memory_bytes') > 0);
    assert.doesNotMatch(text, new RegExp(home.componentSecret));
    assert.doesNotMatch(await readFile(hermod.logFile, 'utf8'), new RegExp(home.componentSecret));

    assert.equal(await hermod.stop(), 0);
    hermod = undefined;
    const gone = await hermodCli('status', '--config', configFile);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no Hermod is running on .*hermod-data/);
  });

  it('migrate copies the whole level store into CouchDB; Hermod then runs on CouchDB with the same nodes, items and subscriptions', async () => {
    // No bounce window: the bounce test below runs on this instance.
    const couchConfig = { store: { backend: 'couchdb', couchdb: { url: couchUrl, db: 'hermod_state' } }, pubsub: { bounceWindowSeconds: 0 } };
    const configFile = await writeHermodConfig({ server: home, dir, extra: couchConfig });
    // What replication remembers is in the store too (the level store of the stopped Hermod).
    const level = new LevelStore(path.join(dir, 'hermod-data', 'store'));
    await level.open();
    await new ReplicationState(level.state('replication')).setCheckpoint('couchdb:notes', '42-g1');
    await new ReplicationState(level.state('midgard')).markRevs('guid-1', ['2026-01-01'], 'i');
    await level.close();
    const migrated = await hermodCli('migrate', '--from', 'level', '--to', 'couchdb', '--config', configFile);
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.match(migrated.stdout, /copying LevelDB .* -> CouchDB http:\/\/\*\*\*@127\.0\.0\.1:\d+\/hermod_state/);
    assert.match(migrated.stdout, /done: \d+ entries copied/);
    assert.doesNotMatch(migrated.stdout + migrated.stderr, new RegExp(COUCH_PASSWORD));
    const again = await hermodCli('migrate', '--from', 'level', '--to', 'couchdb', '--config', configFile);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /target store is not empty/);
    const usage = await hermodCli('migrate', '--from', 'level', '--to', 'level', '--config', configFile);
    assert.equal(usage.code, 2);

    hermod = await site.hermod({ server: home, extra: couchConfig });
    const items = await eventually(() => alice.iq('get', SVC, `<pubsub xmlns='${PUBSUB}'><items node='news'/></pubsub>`), 'items from the CouchDB store');
    assert.deepEqual(itemIds(items), ['one']);
    await alice.iq('set', SVC, publish('news', 'two'));
    await alice.waitForMessage(isItemEvent('news', 'two'), 10_000, 'notification: the subscription moved too');
    const status = await hermodCli('status', '--config', path.join(dir, 'hermod.json'));
    assert.match(status.stdout, /store +CouchDB http:\/\/\*\*\*@127\.0\.0\.1:\d+\/hermod_state/);
    assert.doesNotMatch(await readFile(hermod.logFile, 'utf8'), new RegExp(COUCH_PASSWORD));
    const moved = new KvStore(new CouchKv({ url: couchUrl, db: 'hermod_state' }));
    await moved.open();
    assert.equal(await new ReplicationState(moved.state('replication')).checkpoint('couchdb:notes'), '42-g1', 'the replication checkpoint moved too');
    assert.equal(await new ReplicationState(moved.state('midgard')).revKind('guid-1', '2026-01-01'), 'i', "Midgard's echo memory moved too");
    await moved.close();
  });

  it('bounces: a subscriber on a domain that does not exist loses its subscription after 3 bounced notifications; others keep theirs', async () => {
    const ghost = 'ghost@nowhere.invalid';
    await alice.iq('set', SVC, `<pubsub xmlns='${OWNER}'><subscriptions node='news'><subscription jid='${ghost}' subscription='subscribed'/></subscriptions></pubsub>`);
    const subscribers = async (): Promise<string[]> =>
      (await alice.iq('get', SVC, `<pubsub xmlns='${OWNER}'><subscriptions node='news'/></pubsub>`))
        .getChild('pubsub', OWNER)
        ?.getChild('subscriptions')
        ?.getChildren('subscription')
        .map((s) => s.attrs.jid as string)
        .sort() ?? [];
    assert.deepEqual(await subscribers(), [alice.bare, ghost].sort());
    // The subscription notice bounced once; two publications make three.
    await alice.iq('set', SVC, publish('news', 'b1'));
    await alice.iq('set', SVC, publish('news', 'b2'));
    const removed = await (hermod as HermodProcess).waitForLog((l) => l.msg === 'subscriptions removed after repeated bounces', 'bounce removal', 40_000);
    assert.equal(removed.jid, ghost);
    assert.equal(removed.bounces, 3);
    assert.equal(removed.subscriptions, 1);
    assert.match(String(removed.condition), /^remote-server-(not-found|timeout)$/);
    assert.deepEqual(await subscribers(), [alice.bare]);
    await alice.iq('set', SVC, publish('news', 'b3'));
    await alice.waitForMessage(isItemEvent('news', 'b3'), 10_000, 'the reachable subscriber still notified');
  });
});
