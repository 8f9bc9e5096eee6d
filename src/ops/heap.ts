// How far V8 lets a long-running Hermod's heap grow past what is live. By default V8 sets the
// next old-generation limit after each full GC at up to 4× the live heap when the process
// allocates fast — and replication allocates fast (every document's JSON, entry, store records
// and stanza are short-lived strings) — so a Hermod with ~35 MiB live sat at 130–160 MiB of heap
// (measured in the first-sync benchmark) and that much more resident memory. A growing factor of
// 1.5 keeps the committed heap near the live one, at the cost of more frequent (mostly
// concurrent) full GCs. `--heap-growing-percent` is read by V8 at every GC, so setting it once
// at start takes effect; a NODE_OPTIONS or command-line value given by the operator wins.

import v8 from 'node:v8';

/** The heap growing factor Hermod runs with, as V8's --heap-growing-percent (1 + n/100). */
export const HEAP_GROWING_PERCENT = 50;

/**
 * Sets V8's heap growing factor (see the head comment) unless the operator gave one
 * (`--heap-growing-percent` in process.execArgv or NODE_OPTIONS). Call once at start. Errors: none.
 */
export function boundHeapGrowth(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /^--heap[-_]growing[-_]percent/.test(a));
  if (!given) v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
