#!/usr/bin/env node
// `npm test`: runs every test file under test/ with Node's test runner and tsx.
// Unit tests first, then the in-process wire tests (fast, no servers), then the files that start
// servers one at a time (each starts its own Prosody and ejabberd on private loopback addresses
// and stops them by PID).
// `npm test [-- --no-install] [SUBSTRING...]`: only files whose path contains a SUBSTRING.
// Before files that start servers (all but test/unit/ and test/wire/), the preflight checks the system packages
// of deploy/system-packages.txt (installs missing ones as root unless --no-install or
// HERMOD_NO_INSTALL=1) and root: a unit-only run needs neither.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureSystemPackages } from '../src/devenv/preflight.js';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const args = process.argv.slice(2);
const noInstall = args.includes('--no-install');
const only = args.filter((a) => a !== '--no-install');

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...find(full));
    else if (name.endsWith('.test.ts')) out.push(path.relative(root, full));
  }
  return out;
}

/** Files that start no server: they need neither root nor the system packages. */
const IN_PROCESS = ['unit', 'wire'].map((d) => path.join('test', d) + path.sep);
const inProcess = (f) => IN_PROCESS.some((prefix) => f.startsWith(prefix));
const rank = (f) => (f.startsWith(IN_PROCESS[0]) ? 0 : inProcess(f) ? 1 : 2);
let files = find(path.join(root, 'test')).sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
if (only.length > 0) files = files.filter((f) => only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
if (files.some((f) => !inProcess(f))) {
  const status = ensureSystemPackages({ what: 'npm test', noInstall, needsRoot: true });
  if (status !== 0) process.exit(status);
}
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
  { cwd: root, stdio: 'inherit' },
);
process.exit(result.status ?? 1);
