// The `hermod` command runs from dist/, the bundle scripts/build.js makes of src/ (bin/hermod.js):
// a changed source is never run stale — the bundle is rebuilt before the command runs — and the
// bundle finds what lies beside the sources (here package.json, for the version) as src/ does.
// HERMOD_FROM_SOURCE=1 runs src/ through tsx: the same answers. (Every e2e test starts Hermod
// through bin/hermod.js, so the suite runs the bundle.)

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, utimesSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/hermod.js', import.meta.url));
const ROOT = new URL('../../', import.meta.url);
const hermod = (env: Record<string, string> = {}, ...args: string[]): { code: number | null; stdout: string; stderr: string } => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};
const inputs = (): Record<string, [number, number]> => JSON.parse(readFileSync(new URL('dist/inputs.json', ROOT), 'utf8')) as Record<string, [number, number]>;

describe('hermod runs from the bundle (dist/)', () => {
  it('rebuilds the bundle when a source changed before running it, and answers as src/ does', async () => {
    const version = (JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { version: string }).version;
    const source = new URL('src/version.ts', ROOT);
    const later = new Date(Date.now() + 2000);
    utimesSync(source, later, later); // "edited": same content, newer mtime
    const r = hermod({}, '--version');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${version}\n`);
    assert.equal(r.stderr, '', 'built without complaint, not run from src/ instead');
    assert.deepEqual(inputs()['src/version.ts'], [statSync(source).mtimeMs, statSync(source).size], 'the bundle was rebuilt from the changed source');
    assert.ok(Object.keys(inputs()).includes('src/cli/main.ts'));
    const fromSource = hermod({ HERMOD_FROM_SOURCE: '1' }, '--help');
    const fromBundle = hermod({}, '--help');
    assert.equal(fromBundle.code, 0, fromBundle.stderr);
    assert.equal(fromBundle.stdout, fromSource.stdout);
  });
});
