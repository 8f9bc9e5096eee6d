// Secrets never reach logs or error messages: the real `hermod` process, at debug and trace
// level, is made to fail with a known component secret (refused by real Prosody) and with
// CouchDB URLs carrying user:password (application database and store, both unreachable).
// Neither string may appear anywhere in its stdout or stderr, nor in `hermod check`'s output.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { hermodCli, writeHermodConfig, type ServerInfo } from '../../src/devenv/index.ts';
import { useSite } from './fixtures.ts';

const SECRET = 'Wrong-Secret-7f3a9c';
const PASSWORD = 'Couch-Passw0rd-e41b';

/** `hermod ARGS` with stdout and stderr together. */
const run = async (...args: string[]): Promise<{ code: number; output: string }> => {
  const r = await hermodCli(...args);
  return { code: r.code, output: r.stdout + r.stderr };
};

describe('secrets stay out of logs and errors', { timeout: 120_000 }, () => {
  const site = useSite({ name: 'secrets', ejabberd: false });
  let home: ServerInfo;
  let dir: string;

  before(() => {
    home = site.alpha;
    dir = site.dir;
  });

  it('a refused component secret is logged as refused, never shown (start at trace level, and check)', async () => {
    const component = { jid: home.componentJid, secret: SECRET, server: home.componentService };
    const hermod = await site.hermod({ server: home, name: 'wrong', extra: { component, log: { level: 'trace' } }, waitOnline: false });
    try {
      const failed = await hermod.waitForLog((l) => l.msg === 'component connection failed', 'refused handshake', 20_000);
      assert.match(String(failed.reason), /not-authorized/);
    } finally {
      await hermod.stop().catch(() => hermod.kill());
    }
    const log = await readFile(hermod.logFile, 'utf8');
    assert.ok(log.length > 0);
    assert.doesNotMatch(log, new RegExp(SECRET));

    const check = await run('check', '--config', path.join(dir, 'wrong.json'));
    assert.equal(check.code, 1);
    assert.match(check.output, /refused the component secret/);
    assert.doesNotMatch(check.output, new RegExp(SECRET));
  });

  it('CouchDB credentials in appDb.url and store.couchdb.url are never shown when the database cannot be reached', async () => {
    const url = `http://hermod:${PASSWORD}@127.0.0.1:1`;
    for (const [name, extra] of [
      ['appdb', { appDb: { url, db: 'ajatus_db' }, log: { level: 'trace' } }],
      ['store', { store: { backend: 'couchdb', couchdb: { url, db: 'hermod' } }, log: { level: 'trace' } }],
    ] as const) {
      const config = await writeHermodConfig({ server: home, dir, name, extra });
      const start = await run('start', '--config', config);
      assert.notEqual(start.code, 0, `${name}: start fails`);
      assert.match(start.output, /ECONNREFUSED/, `${name}: the cause is shown`);
      assert.doesNotMatch(start.output, new RegExp(PASSWORD), `${name}: start output`);
      const check = await run('check', '--config', config);
      assert.equal(check.code, 1, `${name}: check fails`);
      assert.match(check.output, name === 'appdb' ? /FAIL {2}appDb {4}cannot read 'ajatus_db'/ : /FAIL {2}store/, `${name}: check names what fails`);
      assert.doesNotMatch(check.output, new RegExp(PASSWORD), `${name}: check output`);
    }
  });
});
