// @ts-check
// The preflight of `hermod demo`, `npm test` (when it runs files that start servers), `npm run
// bench` and .ci/run: are the system packages of deploy/system-packages.txt installed (and are
// we root)? If packages are missing and we may install them (root, apt-get present, not turned
// off with --no-install or HERMOD_NO_INSTALL=1), it says so, runs apt-get update and apt-get
// install quietly (output kept in a log file; under systemd the prosody and ejabberd services
// it has just installed are disabled, as they would hold the servers' ports) and goes on;
// otherwise it prints ONE message naming what is missing and the exact command to run, and the
// caller exits with status 2.
//
// Plain JavaScript (types in JSDoc, checked by tsc) so that scripts/test.js and .ci/run can run
// it with bare node, before `npm ci` and without tsx. `node src/devenv/preflight.js
// [--no-install]` runs it on its own (.ci/run). The decision, `preflight()`, takes the package
// check and the installer as functions, so it is unit-tested without touching dpkg or apt.

import { spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The shared list (one Debian package name per line, `#` comments). */
export const PACKAGE_LIST = fileURLToPath(new URL('../../deploy/system-packages.txt', import.meta.url));
/** Why the demo, the e2e tests and the benchmark need root (servers.ts says it too). */
export const ROOT_REASON =
  'Prosody and ejabberd run in a private mount namespace (unshare -m, then mount --bind of a private /etc/hosts) so that alpha.test and beta.test resolve to loopback addresses without touching the system';
/** Lines of the apt-get log shown when it fails. */
const LOG_TAIL_LINES = 20;

/**
 * @typedef {object} InstallResult
 * @property {boolean} ok       apt-get update and apt-get install both exited 0
 * @property {string} log       the file holding apt-get's whole output
 * @property {string} [failed]  the command that failed, e.g. `apt-get install (exit status 100)`
 * @property {string} [tail]    the last lines of the log, when it failed
 */

/**
 * @typedef {object} PreflightOptions
 * @property {string} what                 the command, as messages name it: "hermod demo", "npm test"
 * @property {string[]} packages           Debian package names needed
 * @property {(names: string[]) => string[] | undefined} check
 *   the names that are not installed; undefined when this host cannot tell (no dpkg-query)
 * @property {(names: string[]) => InstallResult} install   installs the names (apt-get)
 * @property {boolean} root                running as root (uid 0)
 * @property {boolean} aptGet              apt-get is on PATH
 * @property {boolean} allowInstall        automatic install is on (no --no-install, no HERMOD_NO_INSTALL)
 * @property {boolean} needsRoot           the command itself needs root (servers in a mount namespace)
 * @property {(line: string) => void} say  progress lines (stdout)
 * @property {string} [list]               the list file, as messages name it (default deploy/system-packages.txt)
 */

/** @typedef {{ ok: true } | { ok: false, status: 2, message: string }} PreflightResult */

/**
 * Reads a package list: one name per line, `#` starts a comment, blank lines ignored.
 * @param {string} file
 * @returns {string[]}
 * @throws {Error} naming the file and line when a name is not a Debian package name, or when
 *   the file cannot be read
 */
export function readPackageList(file) {
  const names = [];
  const lines = readFileSync(file, 'utf8').split('\n');
  for (const [i, raw] of lines.entries()) {
    const name = raw.replace(/#.*/, '').trim();
    if (!name) continue;
    if (!/^[a-z0-9][a-z0-9+.-]+$/.test(name)) throw new Error(`${file}:${i + 1}: not a Debian package name: ${JSON.stringify(name)}`);
    names.push(name);
  }
  return names;
}

/**
 * The names that dpkg does not list as installed (`dpkg-query -W -f '${Package} ${Status}'`:
 * installed means status `install|hold ok installed`).
 * @param {string[]} names
 * @returns {string[] | undefined} undefined when dpkg-query is not there (not a Debian host)
 */
export function dpkgMissing(names) {
  if (names.length === 0) return [];
  const r = spawnSync('dpkg-query', ['-W', '-f=${Package} ${Status}\\n', ...names], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) return undefined;
  const installed = new Set();
  for (const line of r.stdout.split('\n')) {
    const [pkg, , ok, status] = line.trim().split(/\s+/);
    if (pkg && ok === 'ok' && status === 'installed') installed.add(pkg);
  }
  return names.filter((n) => !installed.has(n));
}

/**
 * True if `command` is an executable file in one of PATH's folders.
 * @param {string} command
 * @param {string} [searchPath]
 */
export function onPath(command, searchPath = process.env.PATH ?? '') {
  return searchPath.split(path.delimiter).some((dir) => {
    if (!dir) return false;
    try {
      accessSync(path.join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Packages whose Debian install starts a system service listening on every address. */
const SERVICES = ['prosody', 'ejabberd'];

/**
 * `apt-get update`, then `apt-get install -y --no-install-recommends NAMES`, non-interactive,
 * their output appended to a log file in the temp folder (kept; its path is returned). Under
 * systemd, the prosody and ejabberd services that this install just started (Debian starts them)
 * are then disabled and stopped: they listen on every address, so they would hold the ports the
 * demo's and tests' own servers need on their loopback addresses. Said on `say`, with the undo.
 * @param {string[]} names
 * @param {(line: string) => void} say
 * @returns {InstallResult}
 */
export function aptInstall(names, say) {
  const log = path.join(tmpdir(), `hermod-apt-get-${process.pid}.log`);
  const fd = openSync(log, 'a');
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    for (const args of [['update'], ['install', '-y', '--no-install-recommends', ...names]]) {
      say(`  apt-get ${args.join(' ')}`);
      const r = spawnSync('apt-get', args, { env, stdio: ['ignore', fd, fd] });
      if (r.status !== 0) {
        const how = r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit status ${r.status}`;
        return { ok: false, log, failed: `apt-get ${args[0]} (${how})`, tail: tail(log, LOG_TAIL_LINES) };
      }
    }
    const services = names.filter((n) => SERVICES.includes(n));
    if (services.length > 0 && existsSync('/run/systemd/system') && onPath('systemctl')) {
      const r = spawnSync('systemctl', ['disable', '--now', ...services], { stdio: ['ignore', fd, fd] });
      say(
        r.status === 0
          ? `  disabled and stopped the system services ${services.join(' ')} that apt-get started: they listen on every address, taking the ports the demo's own servers need (systemctl enable --now ${services.join(' ')} brings them back)`
          : `  could not stop the system services ${services.join(' ')} (systemctl exit status ${r.status}; see the log): if they hold ports 5222/5269/5347/5280 the demo will say so`,
      );
    }
    return { ok: true, log };
  } finally {
    closeSync(fd);
  }
}

/**
 * @param {string} file
 * @param {number} lines
 */
function tail(file, lines) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(log unreadable)';
  }
}

/**
 * The command that installs `names`, as the user should type it.
 * @param {string[]} names
 * @param {boolean} root  false: each apt-get goes through sudo
 */
export function installCommand(names, root) {
  const sudo = root ? '' : 'sudo ';
  return `${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${names.join(' ')}`;
}

/**
 * Decides whether the command can go on: checks the packages, installs the missing ones when
 * allowed (root, apt-get, install not turned off), checks again, and checks root if needed.
 * Never throws for a missing package: that is the `{ ok: false }` answer with one message (the
 * missing names, why they were not installed, the exact command) for exit status 2.
 * @param {PreflightOptions} o
 * @returns {PreflightResult}
 */
export function preflight(o) {
  const list = o.list ?? PACKAGE_LIST;
  const relative = path.relative(process.cwd(), list);
  const listed = `(the list: ${relative && !relative.startsWith('..') ? relative : list})`;
  let missing = o.check(o.packages);
  if (missing === undefined) {
    o.say(`${o.what}: cannot check system packages on this host (no dpkg-query); it needs these Debian packages or their equivalents: ${o.packages.join(' ')}`);
    missing = [];
  }
  /** @type {string[]} */
  const problems = [];
  if (missing.length > 0 && o.root && o.aptGet && o.allowInstall) {
    o.say(`${o.what}: installing the missing system packages ${missing.join(' ')} with apt-get ${listed}; --no-install or HERMOD_NO_INSTALL=1 turns this off`);
    const r = o.install(missing);
    if (!r.ok) {
      return fail(`${o.what}: installing the system packages ${missing.join(' ')} failed: ${r.failed ?? 'apt-get'}; last lines of ${r.log}:\n${indent(r.tail ?? '')}\nFix that, or install them yourself:\n  ${installCommand(missing, true)}`);
    }
    const still = o.check(missing) ?? [];
    if (still.length > 0) {
      return fail(`${o.what}: apt-get succeeded but these system packages are still not installed: ${still.join(' ')} (apt-get log: ${r.log})\nInstall them with:\n  ${installCommand(still, true)}`);
    }
    o.say(`${o.what}: installed ${missing.join(' ')} (apt-get log: ${r.log})`);
    missing = [];
  }
  if (missing.length > 0) {
    const why = !o.allowInstall ? '--no-install or HERMOD_NO_INSTALL is set' : !o.root ? 'not running as root' : 'apt-get is not available on this host';
    problems.push(`missing system packages: ${missing.join(' ')} (not installed automatically: ${why}). Install them with:\n  ${installCommand(missing, o.root)}\n${listed}`);
  }
  if (o.needsRoot && !o.root) {
    problems.push(`needs root: ${ROOT_REASON}. Run it as root (e.g. with sudo).`);
  }
  if (problems.length === 0) return { ok: true };
  return fail(problems.map((p) => `${o.what}: ${p}`).join('\n'));
}

/**
 * @param {string} message
 * @returns {PreflightResult}
 */
const fail = (message) => ({ ok: false, status: 2, message });

/** @param {string} text */
const indent = (text) => text.split('\n').map((l) => `  ${l}`).join('\n');

/**
 * True when HERMOD_NO_INSTALL asks for no automatic install (any value but "", "0", "false").
 * @param {NodeJS.ProcessEnv} env
 */
export function noInstallFromEnv(env = process.env) {
  const v = env.HERMOD_NO_INSTALL;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/**
 * Runs the preflight on this machine: the list from HERMOD_SYSTEM_PACKAGES (a file, for tests)
 * or deploy/system-packages.txt, dpkg-query, apt-get. Prints progress to stdout and the
 * message to stderr.
 * @param {{ what: string, noInstall?: boolean, needsRoot: boolean }} opts
 * @returns {number} 0 to go on, 2 after printing why not
 */
export function ensureSystemPackages(opts) {
  const say = (/** @type {string} */ line) => void process.stdout.write(`${line}\n`);
  const list = process.env.HERMOD_SYSTEM_PACKAGES || PACKAGE_LIST;
  let packages;
  try {
    packages = readPackageList(list);
  } catch (err) {
    process.stderr.write(`${opts.what}: cannot read the system package list: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  const root = process.getuid?.() === 0;
  const result = preflight({
    what: opts.what,
    packages,
    list,
    check: dpkgMissing,
    install: (names) => aptInstall(names, say),
    root,
    aptGet: onPath('apt-get'),
    allowInstall: !opts.noInstall && !noInstallFromEnv(process.env),
    needsRoot: opts.needsRoot,
    say,
  });
  if (result.ok) return 0;
  process.stderr.write(`${result.message}\n`);
  return result.status;
}

// `node src/devenv/preflight.js [--no-install]`: install the list (.ci/run does this before npm ci).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const unknown = args.find((a) => a !== '--no-install');
  if (unknown) {
    process.stderr.write(`preflight: unknown argument '${unknown}' (usage: node src/devenv/preflight.js [--no-install])\n`);
    process.exitCode = 2;
  } else {
    process.exitCode = ensureSystemPackages({ what: 'preflight', noInstall: args.includes('--no-install'), needsRoot: false });
  }
}
