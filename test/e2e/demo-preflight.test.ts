// The real `hermod demo` on a machine that is not ready: a system package missing (simulated
// with a package list, HERMOD_SYSTEM_PACKAGES, that adds one no machine has) and the automatic
// install off, or not root. It must exit 2 before starting anything, with one message naming
// what is missing and the exact command to run — no stack trace, no bare ENOENT.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PACKAGE_LIST } from '../../src/devenv/preflight.js';

const BIN = fileURLToPath(new URL('../../bin/hermod.js', import.meta.url));
const MISSING = 'hermod-test-missing-package';
const dir = mkdtempSync(path.join(tmpdir(), 'hermod-demo-preflight-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const list = path.join(dir, 'system-packages.txt');
writeFileSync(list, `${readFileSync(PACKAGE_LIST, 'utf8')}${MISSING}   # no such package\n`);

function demo(args: string[], env: Record<string, string>, opts: SpawnSyncOptions = {}): { status: number | null; stdout: string; stderr: string } {
  const { HERMOD_NO_INSTALL: _, ...base } = process.env;
  const r = spawnSync(process.execPath, [BIN, 'demo', ...args], { encoding: 'utf8', timeout: 60_000, env: { ...base, ...env }, ...opts });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

function assertRefusedBeforeStarting(r: { status: number | null; stdout: string; stderr: string }): void {
  assert.equal(r.status, 2, r.stderr);
  assert.doesNotMatch(r.stdout, /Starting Prosody/);
  assert.doesNotMatch(r.stderr, /\n\s+at |ENOENT/, 'no stack trace, no bare ENOENT');
}

for (const [how, args, env] of [
  ['--no-install', ['--no-install'], { HERMOD_SYSTEM_PACKAGES: list }],
  ['HERMOD_NO_INSTALL=1', [], { HERMOD_SYSTEM_PACKAGES: list, HERMOD_NO_INSTALL: '1' }],
] as const) {
  it(`a missing system package with ${how}: exit 2, its name and the apt-get command`, () => {
    const r = demo([...args], env);
    assertRefusedBeforeStarting(r);
    assert.equal(
      r.stderr,
      `hermod demo: missing system packages: ${MISSING} (not installed automatically: --no-install or HERMOD_NO_INSTALL is set). Install them with:\n` +
        `  apt-get update && apt-get install -y --no-install-recommends ${MISSING}\n(the list: ${list})\n`,
    );
  });
}

it('not root: exit 2 saying why the demo needs root', { skip: process.getuid?.() !== 0 && 'needs root to run the demo as another user' }, () => {
  // As nobody, with every package there: the one thing missing is root.
  const r = demo([], { HOME: tmpdir() }, { uid: 65534, gid: 65534, cwd: tmpdir() });
  assertRefusedBeforeStarting(r);
  assert.match(r.stderr, /^hermod demo: needs root: Prosody and ejabberd run in a private mount namespace \(unshare -m/);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, 'one line');
});
