// Config validation: good configs load with defaults; every bad one is refused with a message
// naming the key — also through the real `hermod start` command (exit status 2). A good config
// whose component server is not listening: an error naming component.server, then retries.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, configNotes, validateConfig } from '../../src/config/config.ts';
import { parsePartnerSettings } from '../../src/replication/settings.ts';

const good = { component: { jid: 'pubsub.example.org', secret: 's3cret', server: 'xmpp://127.0.0.1:5347' }, dataDir: './data' };
const dir = mkdtempSync(path.join(tmpdir(), 'hermod-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function refused(raw: unknown, pattern: RegExp): void {
  assert.throws(() => validateConfig(raw, '/etc/hermod'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('config validation', () => {
  it('fills defaults and resolves dataDir against the config folder', () => {
    const c = validateConfig(good, '/etc/hermod');
    assert.equal(c.dataDir, '/etc/hermod/data');
    assert.deepEqual(c.pubsub.creatorDomains, ['example.org']);
    assert.deepEqual(c.pubsub.admins, []);
    assert.equal(c.store.sync, false);
    assert.equal(c.ajatus.packedPayloads, true, 'packed payloads asked of partners by default');
    assert.equal(c.log.level, 'info');
  });

  it('notes a section that has no effect (ajatus without appDb) and shared subscription settings that differ (check prints them, start logs them)', () => {
    const notes = configNotes(validateConfig({ ...good, ajatus: { contentDb: 'notes' } }, '/etc/hermod'));
    assert.equal(notes.length, 1);
    assert.match(notes[0] as string, /^ajatus: ignored without appDb .*add appDb, or remove the ajatus section$/);
    assert.deepEqual(configNotes(validateConfig(good, '/etc/hermod')), [], 'nothing to note');
    assert.deepEqual(configNotes(validateConfig({ appDb: { url: 'http://127.0.0.1:5984' }, ajatus: { contentDb: 'notes' } }, '/etc/hermod')), [], 'with appDb it is used');
    const both = (ajatus: object, midgard: object): readonly string[] => configNotes(validateConfig({ appDb: { url: 'http://127.0.0.1:5984' }, ajatus, midgard: { bus: 'none', ...midgard } }, '/etc/hermod'));
    assert.deepEqual(both({}, {}), [], 'Ajatus and Midgard with the same subscription settings');
    assert.deepEqual(
      both({ packedPayloads: false }, { notificationDigestMs: 100 }),
      [
        "midgard.notificationDigestMs: 100 differs from ajatus.notificationDigestMs (25); the two replications share the component's subscriptions at partners' services, and a node both follow gets whichever set it up last: set both alike",
        "midgard.packedPayloads: true differs from ajatus.packedPayloads (false); the two replications share the component's subscriptions at partners' services, and a node both follow gets whichever set it up last: set both alike",
      ],
      'settings of the shared subscriptions that differ are noted',
    );
    assert.deepEqual(configNotes(validateConfig({ ...good, midgard: { bus: 'none', packedPayloads: false } }, '/etc/hermod')), [], 'Midgard alone: nothing shared');
  });

  it('needs only the application database when credentials live there', () => {
    const c = validateConfig({ appDb: { url: 'http://127.0.0.1:5984' } }, '/srv/hermod');
    assert.equal(c.component, undefined);
    assert.deepEqual(c.appDb, { url: 'http://127.0.0.1:5984', db: 'ajatus_db' });
    assert.equal(c.ajatus.contentDb, 'ajatus_db_content');
    assert.equal(c.dataDir, '/srv/hermod/data');
  });

  it('names the key of every problem', () => {
    refused({ ...good, component: { ...good.component, jid: 'me@example.org' } }, /^component\.jid: must be a domain JID/);
    refused({ ...good, component: { jid: 'pubsub.example.org', server: 'xmpp://h:5347' } }, /^component\.secret: missing/);
    refused({ ...good, component: { ...good.component, server: 'http://h' } }, /^component\.server: must look like/);
    refused({ ...good, component: { ...good.component, secret: 42 } }, /^component\.secret: must be a non-empty string, got 42/);
    refused({ dataDir: './d' }, /^component: missing/);
    refused({ appDb: { url: 'ftp://x' } }, /^appDb\.url: must be an http\(s\) URL/);
    refused({ appDb: { url: 'http://127.0.0.1:5984' }, ajatus: { codec: 'yaml' } }, /^ajatus\.codec: must be "json" or "xml"/);
    refused({ ...good, pubsub: { admins: ['admin@example.org/res'] } }, /^pubsub\.admins\[0\]: must be a bare JID/);
    refused({ ...good, pubsub: { admins: 'admin@example.org' } }, /^pubsub\.admins: must be an array of strings/);
    refused({ ...good, store: { sync: 'yes' } }, /^store\.sync: must be true or false/);
    refused({ appDb: { url: 'http://127.0.0.1:5984' }, ajatus: { packedPayloads: 'off' } }, /^ajatus\.packedPayloads: must be true or false, got "off"/);
    refused({ ...good, midgard: { bus: 'none', packedPayloads: 0 } }, /^midgard\.packedPayloads: must be true or false, got 0/);
    refused({ ...good, log: { level: 'loud' } }, /^log\.level: must be one of/);
    refused({ ...good, colour: 'blue' }, /^colour: unknown key/);
    refused([1], /must be a JSON object/);
  });

  it('selects the store backend, metrics and bounce limit; names the key of every problem there', () => {
    const level = validateConfig(good, '/etc/hermod');
    assert.deepEqual([level.store, level.metrics, level.pubsub.maxBounces], [{ backend: 'level', sync: false }, undefined, 3]);
    const couch = validateConfig({ ...good, store: { backend: 'couchdb', couchdb: { url: 'http://u:p@127.0.0.1:5984' } }, metrics: { port: 9464 }, pubsub: { maxBounces: 5 } }, '/');
    assert.deepEqual(couch.store, { backend: 'couchdb', sync: false, couchdb: { url: 'http://u:p@127.0.0.1:5984', db: 'hermod' } });
    assert.deepEqual(couch.metrics, { port: 9464, host: '127.0.0.1' });
    assert.equal(couch.pubsub.maxBounces, 5);
    refused({ ...good, store: { backend: 'sqlite' } }, /^store\.backend: must be "level" or "couchdb", got "sqlite"/);
    refused({ ...good, store: { backend: 'couchdb' } }, /^store\.couchdb: missing/);
    refused({ ...good, store: { backend: 'couchdb', couchdb: {} } }, /^store\.couchdb\.url: missing/);
    refused({ ...good, store: { backend: 'couchdb', couchdb: { url: 'ftp://u:hidden@x' } } }, /^store\.couchdb\.url: must be an http\(s\) URL of a CouchDB server$/);
    refused({ ...good, store: { backend: 'couchdb', couchdb: { url: 'http://x', db: 'Bad Name' } } }, /^store\.couchdb\.db: must be a CouchDB database name/);
    refused({ ...good, store: { couchdb: { url: 'http://x' } } }, /^store\.couchdb: only used with store\.backend "couchdb"/);
    refused({ ...good, metrics: { port: 'x' } }, /^metrics\.port: must be a TCP port number/);
    refused({ ...good, metrics: { port: 1, bind: 'x' } }, /^metrics\.bind: unknown key/);
    refused({ ...good, pubsub: { maxBounces: 0 } }, /^pubsub\.maxBounces: must be a whole number of at least 1/);
  });

  it('reads per-subscription stylesheets (Midgard partners, Ajatus hermod:partner documents) and names the field of every problem', () => {
    const c = validateConfig(
      { ...good, transforms: { dir: './xsl', timeoutMs: 2000 }, midgard: { bus: 'none', partners: ['a@example.org', { jid: 'pubsub.b.example', follow: ['/tags/news'], transform: { '/tags/news': { stylesheet: 'ajatus2midgard.xsl', params: { 'topic-guid': 'abc' } }, '*': 'other.xsl' } }] } },
      '/etc/hermod',
    );
    assert.deepEqual(c.transforms, { dir: '/etc/hermod/xsl', timeoutMs: 2000, maxOutput: 8 * 1024 * 1024 });
    assert.deepEqual(c.midgard?.partners, ['a@example.org', 'pubsub.b.example']);
    assert.deepEqual(c.midgard?.partnerSettings['pubsub.b.example'], {
      follow: ['/tags/news'],
      transform: { '/tags/news': { stylesheet: 'ajatus2midgard.xsl', params: { 'topic-guid': 'abc' } }, '*': { stylesheet: 'other.xsl', params: {} } },
    });
    refused({ ...good, transforms: { timeoutMs: -1 } }, /^transforms\.timeoutMs: must be a positive whole number, got -1/);
    refused({ ...good, transforms: { xsl: 1 } }, /^transforms\.xsl: unknown key/);
    refused({ ...good, midgard: { partners: [{ jid: 'b.example', transform: { '/n': { stylesheet: '' } } }] } }, /^midgard\.partners\[0\]\.transform\["\/n"\]\.stylesheet: must be a non-empty path/);
    refused({ ...good, midgard: { partners: [{ jid: 'b.example', transform: { '/n': { stylesheet: 'x.xsl', params: { t: 1 } } } }] } }, /^midgard\.partners\[0\]\.transform\["\/n"\]\.params\.t: must be a string, got 1/);
    refused({ ...good, midgard: { partners: [{ jid: 'b.example', follow: '/tags/x' }] } }, /^midgard\.partners\[0\]\.follow: must be an array of node ids/);
    refused({ ...good, midgard: { partners: [{ jid: 'not a jid' }] } }, /^midgard\.partners\[0\]\.jid: must be a JID/);
    refused({ ...good, midgard: { partners: [{ jid: 'b.example', xslt: 'x' }] } }, /^midgard\.partners\[0\]\.xslt: unknown key \(known: jid, follow, transform\)/);

    const ajatus = parsePartnerSettings({ _id: 'hermod:partner:pubsub.a.example', follow: ['/midgard_article/all'], transform: { '/midgard_article/all': 'midgard2ajatus.xsl' } });
    assert.deepEqual(ajatus, { follow: ['/midgard_article/all'], transform: { '/midgard_article/all': { stylesheet: 'midgard2ajatus.xsl', params: {} } } });
    assert.throws(() => parsePartnerSettings({ _id: 'hermod:partner:p.example', transform: ['x.xsl'] }), /^Error: hermod:partner:p\.example: transform: must be an object mapping node ids/);
    assert.throws(() => parsePartnerSettings({ _id: 'hermod:partner:p.example', transform: { '*': { stylesheet: 'x.xsl', param: {} } } }), /transform\["\*"\]\.param: unknown key \(known: stylesheet, params\)/);
  });

  it('lists every problem at once, one line each, keys written as in the file', () => {
    const raw = {
      component: { jid: 'a b', secret: 's3cret', server: 'xmpp://h:5347' },
      store: { backend: 'couchdb', sync: 'yes' },
      'my key': 1,
      midgard: { access: { foo: {}, '/n': { whitelist: ['x@y/r'] } }, partners: ['not a jid', { jid: 'b.example', transform: { '/n': { stylesheet: 'x.xsl', params: { 'a b': 'c' } } } }] },
    };
    assert.throws(() => validateConfig(raw, '/'), (err: Error) => {
      assert.deepEqual(err.message.split('\n').sort(), [
        '["my key"]: unknown key (known: component, dataDir, appDb, ajatus, pubsub, limits, store, transforms, metrics, log, midgard, cluster)',
        'component.jid: must be a domain JID such as "pubsub.example.org" (no @ or /), got "a b"',
        'midgard.access["/n"].whitelist[0]: must be a bare JID, got "x@y/r"',
        'midgard.access["foo"]: keys must be node ids starting with "/" or "*"',
        'midgard.partners[0]: must be a JID, got "not a jid"',
        'midgard.partners[1].transform["/n"].params["a b"]: must be a stylesheet parameter name (a letter or _, then letters, digits, _ . -), got "a b"',
        'store.couchdb: missing (an object is required)',
        'store.sync: must be true or false, got "yes"',
      ]);
      return true;
    });
  });

  it('resolves every path key against the config folder', () => {
    const c = validateConfig({ ...good, transforms: { dir: 'xsl' }, midgard: { spool: 'out', inbound: '/var/in', topicsExport: '../topics.xml' } }, '/etc/hermod');
    assert.deepEqual([c.transforms.dir, c.midgard?.spool, c.midgard?.inbound, c.midgard?.topicsExport], ['/etc/hermod/xsl', '/etc/hermod/out', '/var/in', '/etc/topics.xml']);
  });

  it('never echoes the secret in an error', () => {
    assert.throws(() => validateConfig({ ...good, dataDir: 5 }, '/'), (err: Error) => !err.message.includes('s3cret'));
  });
});

describe('hermod start with a bad config', () => {
  const bin = fileURLToPath(new URL('../../bin/hermod.js', import.meta.url));
  const run = (...args: string[]): { status: number | null; stderr: string; stdout: string } => {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, stderr: r.stderr, stdout: r.stdout };
  };

  it('exits 2 naming the key, the file, or the JSON problem', () => {
    const badJid = path.join(dir, 'bad-jid.json');
    writeFileSync(badJid, JSON.stringify({ ...good, component: { ...good.component, jid: 'a b' } }));
    let r = run('start', '--config', badJid);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /bad-jid\.json: component\.jid: must be a domain JID/);

    const broken = path.join(dir, 'broken.json');
    writeFileSync(broken, '{ "component": ');
    r = run('start', '--config', broken);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /broken\.json is not valid JSON/);

    r = run('start', '--config', path.join(dir, 'missing.json'));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /cannot read config file .*missing\.json: ENOENT/);

    r = run('start');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--config FILE is required/);
  });

  it('documents itself in --help', () => {
    const r = run('--help');
    assert.equal(r.status, 0);
    for (const key of ['component', 'secret', 'server', 'dataDir', 'admins', 'creatorDomains', 'store', 'log-level']) assert.ok(r.stdout.includes(key), key);
  });
});

describe('hermod start with a component server that is not listening', () => {
  it('logs an error naming component.server and the address at the first failure, then keeps retrying (warn)', async () => {
    // A loopback port that nothing listens on: bound by us, then closed.
    const probe = createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as { port: number }).port;
    probe.close();
    await once(probe, 'close');
    const file = path.join(dir, 'no-server.json');
    writeFileSync(file, JSON.stringify({ ...good, component: { ...good.component, server: `xmpp://127.0.0.1:${port}` }, dataDir: path.join(dir, 'no-server-data') }));

    const bin = fileURLToPath(new URL('../../bin/hermod.js', import.meta.url));
    const child = spawn(process.execPath, [bin, 'start', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    const failures: Array<Record<string, unknown>> = [];
    let stderr = '';
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('exit', (code) => reject(new Error(`hermod start exited (${code}) instead of retrying:\n${stderr}`)));
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
          stderr += chunk;
          const lines = stderr.split('\n').slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>);
          failures.splice(0, failures.length, ...lines.filter((l) => l.msg === 'component connection failed'));
          if (failures.length >= 2) resolve();
        });
      });
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    }
    const [first, second] = failures as [Record<string, unknown>, Record<string, unknown>];
    assert.equal(first.level, 50, 'the first failure is an error');
    assert.equal(first.key, 'component.server');
    assert.equal(first.server, `xmpp://127.0.0.1:${port}`);
    assert.match(String(first.reason), new RegExp(`nothing is listening at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED, connection refused\\)`));
    assert.equal(second.level, 40, 'the retries that follow are warnings');
    assert.equal(second.failures, 2);
    assert.ok(Number(second.retryInMs) > Number(first.retryInMs), 'with backoff');
  });

  it('refuses --no-install outside the demo', () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('../../bin/hermod.js', import.meta.url)), 'start', '--no-install'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--no-install applies to 'hermod demo' only/);
  });
});
