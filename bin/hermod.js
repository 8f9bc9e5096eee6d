#!/usr/bin/env node
// Entry point of the `hermod` command. Hermod is written in TypeScript and runs from dist/, the
// bundle scripts/build.js makes of src/ (npm's `prepare` builds it, so `npm ci` is still the only
// install step). When a source file changed since the bundle was built, or there is none, it is
// rebuilt first; when that cannot be done (no esbuild, a read-only install) — or with
// HERMOD_FROM_SOURCE=1 — Hermod runs from src/ through tsx's loader instead: the same code,
// about half a second slower to start (every module compiled on each start).
import { readFileSync, statSync } from 'node:fs';

const ROOT = new URL('../', import.meta.url);
const MAIN = new URL('dist/main.js', ROOT);

/** True when dist/inputs.json names every source the bundle was built from with its current mtime and size. */
function bundleFresh() {
  try {
    const inputs = JSON.parse(readFileSync(new URL('dist/inputs.json', ROOT), 'utf8'));
    for (const [file, [mtimeMs, size]] of Object.entries(inputs)) {
      const s = statSync(new URL(file, ROOT));
      if (s.mtimeMs !== mtimeMs || s.size !== size) return false;
    }
    statSync(MAIN);
    return true;
  } catch {
    return false;
  }
}

async function rebuilt() {
  try {
    await (await import('../scripts/build.js')).build();
    return true;
  } catch (err) {
    process.stderr.write(`hermod: cannot build dist/ (${err.message.split('\n')[0]}); running from src/ through tsx\n`);
    return false;
  }
}

let main;
if (process.env.HERMOD_FROM_SOURCE !== '1' && (bundleFresh() || (await rebuilt()))) ({ main } = await import(MAIN.href));
else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../src/cli/main.ts'));
}
process.exitCode = await main(process.argv.slice(2));
