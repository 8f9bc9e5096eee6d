// The preflight of `hermod demo`, `npm test` and `npm run bench`: its decision with an injected
// package check and installer (nothing missing / install / refuse with one message and status
// 2), the shared package list, and the real dpkg-query check on this Debian host.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { dpkgMissing, installCommand, noInstallFromEnv, PACKAGE_LIST, preflight, readPackageList, type InstallResult, type PreflightOptions } from '../../src/devenv/preflight.js';

const dir = mkdtempSync(path.join(tmpdir(), 'hermod-preflight-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A machine where `installed` are the installed packages; records what was said and installed. */
function machine(installed: string[], over: Partial<PreflightOptions> = {}, installResult?: (names: string[]) => InstallResult) {
  const have = new Set(installed);
  const said: string[] = [];
  const installs: string[][] = [];
  const opts: PreflightOptions = {
    what: 'hermod demo',
    packages: ['prosody', 'ejabberd', 'dbus'],
    check: (names) => names.filter((n) => !have.has(n)),
    install: (names) => {
      installs.push(names);
      const r = installResult?.(names) ?? { ok: true, log: '/tmp/apt.log' };
      if (r.ok) for (const n of names) have.add(n);
      return r;
    },
    root: true,
    aptGet: true,
    allowInstall: true,
    needsRoot: true,
    say: (line) => said.push(line),
    ...over,
  };
  return { opts, said, installs };
}

const refusal = (r: ReturnType<typeof preflight>): string => {
  assert.equal(r.ok, false, 'refused');
  assert.ok(!r.ok);
  assert.equal(r.status, 2);
  return r.message;
};

describe('preflight decision', () => {
  it('goes on without installing anything when nothing is missing', () => {
    const m = machine(['prosody', 'ejabberd', 'dbus']);
    assert.deepEqual(preflight(m.opts), { ok: true });
    assert.deepEqual(m.installs, []);
    assert.deepEqual(m.said, []);
  });

  it('as root with apt-get: says what it installs, installs only the missing ones, checks again and goes on', () => {
    const m = machine(['dbus']);
    assert.deepEqual(preflight(m.opts), { ok: true });
    assert.deepEqual(m.installs, [['prosody', 'ejabberd']]);
    assert.match(m.said[0] ?? '', /^hermod demo: installing the missing system packages prosody ejabberd with apt-get .*--no-install or HERMOD_NO_INSTALL=1 turns this off/);
    assert.match(m.said.at(-1) ?? '', /installed prosody ejabberd \(apt-get log: \/tmp\/apt\.log\)/);
  });

  it('exits 2 with the tail of the apt-get log and the command when apt-get fails', () => {
    const m = machine(['dbus'], {}, () => ({ ok: false, log: '/tmp/apt.log', failed: 'apt-get install (exit status 100)', tail: 'E: Unable to locate package prosody' }));
    const msg = refusal(preflight(m.opts));
    assert.match(msg, /^hermod demo: installing the system packages prosody ejabberd failed: apt-get install \(exit status 100\); last lines of \/tmp\/apt\.log:\n {2}E: Unable to locate package prosody\n/);
    assert.ok(msg.includes('apt-get update && apt-get install -y --no-install-recommends prosody ejabberd'));
  });

  it('exits 2 when apt-get succeeded but a package is still not installed', () => {
    const m = machine(['dbus'], { install: () => ({ ok: true, log: '/tmp/apt.log' }) }); // installs nothing
    const msg = refusal(preflight(m.opts));
    assert.match(msg, /^hermod demo: apt-get succeeded but these system packages are still not installed: prosody ejabberd \(apt-get log: \/tmp\/apt\.log\)\n/);
  });

  for (const [label, over, why] of [
    ['--no-install / HERMOD_NO_INSTALL', { allowInstall: false }, /--no-install or HERMOD_NO_INSTALL is set/],
    ['no apt-get', { aptGet: false }, /apt-get is not available on this host/],
  ] as const) {
    it(`refuses with one message and status 2, installing nothing: ${label}`, () => {
      const m = machine(['dbus'], over);
      const msg = refusal(preflight(m.opts));
      assert.deepEqual(m.installs, []);
      assert.match(msg, /^hermod demo: missing system packages: prosody ejabberd /);
      assert.match(msg, why);
      assert.ok(msg.includes('\n  apt-get update && apt-get install -y --no-install-recommends prosody ejabberd\n'), msg);
      assert.doesNotMatch(msg, /needs root/);
    });
  }

  it('not root: names the missing packages with a sudo command, and says why root is needed', () => {
    const m = machine(['dbus'], { root: false });
    const msg = refusal(preflight(m.opts));
    assert.deepEqual(m.installs, []);
    assert.match(msg, /missing system packages: prosody ejabberd \(not installed automatically: not running as root\)/);
    assert.ok(msg.includes('sudo apt-get update && sudo apt-get install -y --no-install-recommends prosody ejabberd'));
    assert.match(msg, /\nhermod demo: needs root: Prosody and ejabberd run in a private mount namespace \(unshare -m/);
  });

  it('not root with every package there: refused only where root is needed', () => {
    const m = machine(['prosody', 'ejabberd', 'dbus'], { root: false });
    assert.match(refusal(preflight(m.opts)), /^hermod demo: needs root: Prosody and ejabberd run in a private mount namespace \(unshare -m/);
    assert.deepEqual(preflight({ ...m.opts, needsRoot: false }), { ok: true });
  });

  it('on a host without dpkg-query: says the packages are needed by name and goes on', () => {
    const m = machine([], { check: () => undefined });
    assert.deepEqual(preflight(m.opts), { ok: true });
    assert.deepEqual(m.installs, []);
    assert.match(m.said[0] ?? '', /cannot check system packages on this host \(no dpkg-query\); it needs these Debian packages or their equivalents: prosody ejabberd dbus/);
  });
});

describe('the package list and the checks', () => {
  it('deploy/system-packages.txt is the one list, and names what the servers, tests and benchmark run', () => {
    const names = readPackageList(PACKAGE_LIST);
    for (const p of ['prosody', 'lua-unbound', 'ejabberd', 'prosody-modules', 'python3-slixmpp', 'dbus', 'util-linux', 'mount']) assert.ok(names.includes(p), p);
    assert.equal(new Set(names).size, names.length, 'no duplicates');
  });

  it('reads comments and blank lines, and names the file and line of a bad entry', () => {
    const file = path.join(dir, 'list.txt');
    writeFileSync(file, '# comment\n\nprosody   # why\n  dbus\n');
    assert.deepEqual(readPackageList(file), ['prosody', 'dbus']);
    writeFileSync(file, 'prosody\napt-get install x\n');
    assert.throws(() => readPackageList(file), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:2: not a Debian package name: "apt-get install x"`));
  });

  it('dpkg-query tells installed packages from missing ones (this Debian host)', () => {
    assert.deepEqual(dpkgMissing(['dpkg', 'hermod-test-missing-package']), ['hermod-test-missing-package']);
    assert.deepEqual(dpkgMissing([]), []);
  });

  it('HERMOD_NO_INSTALL turns the install off unless empty, 0 or false', () => {
    assert.equal(noInstallFromEnv({}), false);
    for (const v of ['', '0', 'false', 'FALSE']) assert.equal(noInstallFromEnv({ HERMOD_NO_INSTALL: v }), false, v);
    for (const v of ['1', 'yes', 'true']) assert.equal(noInstallFromEnv({ HERMOD_NO_INSTALL: v }), true, v);
  });

  it('the command to run: plain as root, through sudo otherwise', () => {
    assert.equal(installCommand(['a', 'b'], true), 'apt-get update && apt-get install -y --no-install-recommends a b');
    assert.equal(installCommand(['a'], false), 'sudo apt-get update && sudo apt-get install -y --no-install-recommends a');
  });
});
