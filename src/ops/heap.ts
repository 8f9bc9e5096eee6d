// How far V8 lets a long-running Hermod's heap grow past what is live. By default V8 sets the
// next old-generation limit after each full GC at up to 4× the live heap when the process
// allocates fast — and replication allocates fast (every document's JSON, entry, store records
// and stanza are short-lived strings) — so a Hermod with ~35 MiB live sat at 130–160 MiB of heap
// (measured in the first-sync benchmark) and that much more resident memory. A growing factor of
// 2 keeps the committed heap within twice the live one. It was 1.5 until session 10, whose
// profiles showed what the more frequent full GCs cost besides their own work: V8 holds the
// optimised code of a closure only weakly, so every full GC drops it for the short-lived
// callbacks created per batch (`.map((x) => …)` and the like), and TurboFan compiles them
// again — 20–30 % of a replicating Hermod's CPU went to the compiler all through a long round.
// Factor 2 against 1.5, a 12 000-document N = 4 round: full GCs 18 → 10 at the source, 8 → 6 at
// a partner, TurboFan compilations 593 → 441 and 334 → 306; first sync of 100 000 documents
// peak RSS 244 / 191 MiB (source / partner; 1.5: 229 / 188; factor 3: 261 / 254).
// `--heap-growing-percent` is read by V8 at every GC, so setting it once at start takes effect;
// a NODE_OPTIONS or command-line value given by the operator wins.

import v8 from 'node:v8';

/** The heap growing factor Hermod runs with, as V8's --heap-growing-percent (1 + n/100). */
export const HEAP_GROWING_PERCENT = 100;

/**
 * Sets V8's heap growing factor (see the head comment) unless the operator gave one
 * (`--heap-growing-percent` in process.execArgv or NODE_OPTIONS). Call once at start. Errors: none.
 */
export function boundHeapGrowth(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /^--heap[-_]growing[-_]percent/.test(a));
  if (!given) v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}

// What a running Hermod cannot change about itself, because the C library reads it before any of
// Hermod's code runs, and what the places that start Hermod therefore pass along
// (deploy/hermod.service; src/devenv/hermod.ts for tests, the demo and the benchmarks). Measured
// in first syncs of 50 000 documents (docs/PERFORMANCE.md, Replication): the source Hermod's
// live JavaScript heap is ~30 MiB; its resident memory is mostly V8's young generation (2 × 16
// MiB), the old generation's headroom, the node binary, LevelDB's table files read by its
// compactions (mapped), and glibc's per-thread malloc arenas: LevelDB's compaction thread,
// libuv's four workers running LevelDB reads and writes and V8's helper threads each keep, in an
// arena of their own, what they freed (~15–20 MiB more than with two arenas, at no measured CPU
// cost). A young generation of 2 × 8 MiB (`--max-semi-space-size=8`) saved another ~16 MiB but
// cost ~11 % more CPU per replicated document: not used. One of 2 × 32 MiB saved nothing
// measurable in N = 4 fan-out rounds (docs/PERFORMANCE.md, session 23): not used either.

/**
 * Environment Hermod is started with, unless the operator's environment sets these:
 * MALLOC_ARENA_MAX=2 bounds glibc's malloc arenas to two (its default: 8 per core), so memory
 * freed by one thread is reused by the others instead of being held per thread.
 */
export const HERMOD_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };
