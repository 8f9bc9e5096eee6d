#!/usr/bin/env node
// `npm run build` (also npm's `prepare`, so `npm ci` builds it): bundles src/ into dist/ with
// esbuild — dist/main.js (the `hermod` command's code, src/cli/main.ts and everything it imports
// statically) plus one chunk per dynamic import (subcommands, replication adapters), so what a
// start does not need is not loaded. npm packages stay external (node_modules), but for zod: pure
// ES modules, ~30 files, that Node loads faster as part of a chunk (~40-60 ms less CPU at
// start; the config schema needs it before anything else). Why bundle at all: Node then
// loads a few plain JavaScript files instead of compiling ~150 TypeScript modules through tsx's
// loader thread at every start (about half of the restart time at 100 000 nodes).
// `import.meta.url` in a source file is rewritten to that file's own URL (relative to the
// bundle), so files found next to the sources (package.json, stylesheets/, the XSLT worker)
// resolve as they do from src/. dist/inputs.json records each source's mtime and size (zod's
// files too): bin/hermod.js rebuilds when one changed.

import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const DIST = path.join(ROOT, 'dist');
/** Source mtimes and sizes the bundle was built from: { "src/…": [mtimeMs, size] }. */
export const INPUTS = path.join(DIST, 'inputs.json');
/** Packages bundled in (the rest are imported from node_modules at run time). */
const INLINE = ['zod'];

/** Rewrites `import.meta.url` in first-party sources to the source file's URL, relative to the output folder. */
function importMetaUrl(outdir) {
  return {
    name: 'import-meta-url',
    setup(build) {
      build.onLoad({ filter: /\.(ts|js|mjs)$/ }, async (args) => {
        if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
        const text = await readFile(args.path, 'utf8');
        if (!text.includes('import.meta.url')) return undefined;
        const rel = path.relative(outdir, args.path).split(path.sep).join('/');
        const own = `new URL(${JSON.stringify(rel)}, import.meta.url).href`;
        return { contents: text.replaceAll('import.meta.url', own), loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
      });
    },
  };
}

/**
 * Builds dist/. Each file is written to a temporary name and renamed into place, chunks first,
 * then main.js, then inputs.json; chunk names carry a content hash and old chunks are left in
 * place, so a running Hermod still finds the chunks it imports later, and a process starting
 * meanwhile sees a whole bundle. Resolves to the number of source files bundled. Throws what
 * esbuild throws (a syntax error names file and line).
 */
export async function build() {
  const { build: esbuild } = await import('esbuild');
  const result = await esbuild({
    absWorkingDir: ROOT,
    entryPoints: { main: 'src/cli/main.ts' },
    outdir: DIST,
    write: false,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: Object.keys(JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')).dependencies).filter((name) => !INLINE.includes(name)),
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'silent',
    plugins: [importMetaUrl(DIST)],
  });
  const inputs = {};
  for (const file of Object.keys(result.metafile.inputs)) {
    const s = await stat(path.join(ROOT, file));
    inputs[file] = [s.mtimeMs, s.size];
  }
  await mkdir(DIST, { recursive: true });
  const put = async (file, contents) => {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, contents);
    await rename(tmp, file);
  };
  await put(path.join(DIST, 'package.json'), '{ "type": "module" }\n');
  const isMain = (f) => path.basename(f.path).startsWith('main.');
  for (const f of result.outputFiles.filter((o) => !isMain(o))) await put(f.path, f.contents);
  for (const f of result.outputFiles.filter(isMain)) await put(f.path, f.contents);
  await put(INPUTS, JSON.stringify(inputs));
  // Chunks of earlier builds go once they are a day old (a Hermod started from one may still import them).
  const current = new Set(result.outputFiles.map((f) => path.basename(f.path)));
  for (const name of await readdir(DIST)) {
    if (!/^[\w-]+-[A-Z0-9]{8}\.js(\.map)?$/.test(name) || current.has(name)) continue;
    const file = path.join(DIST, name);
    if (Date.now() - (await stat(file)).mtimeMs > 86_400_000) await rm(file, { force: true });
  }
  return Object.keys(inputs).length;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const t0 = performance.now();
  const files = await build();
  process.stdout.write(`hermod: built dist/ from ${files} source files in ${Math.round(performance.now() - t0)} ms\n`);
}
