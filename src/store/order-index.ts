// Positions in a node's publication order in O(log n) reads, for RSM paging (XEP-0059) from an
// unknown place: the `o\0<node>\0<seq>` order keys (kv-store.ts) plus counted buckets over the
// sequence numbers, kept in the same batch as every change to the order keys.
//
// A sequence number (< 2^48) is read as eight base-64 digits. For each level k = 1..7 the key
//   c\0<node>\0<k>\0<seq / 64^k as 12 hex digits>
// holds how many order keys fall in that bucket (absent: none). The 64 buckets of level k under
// one bucket of level k+1 are adjacent keys, so:
//   position(seq)  = Σ over k = 7..1 of the counts of the level-k buckets before seq's own bucket
//                    under the same parent (one range read of ≤ 63 keys per level, skipped where
//                    seq's bucket is its parent's first)
//                  + the order keys before seq in its level-1 bucket (≤ 63 keys)
//   seqAt(index)   = the same walk downwards, choosing at each level the bucket that holds it.
// Both read at most 8 × 63 small keys, O(log n) with base 64 whatever the position: at 100 000
// items, ~3 levels are in use (about 100 keys read). Only the levels in use are counted: level k
// once the node's highest sequence number reaches 64^k (below, every key is in its bucket 0,
// and both walks skip the level). A level comes into use with its bucket 0 counter set to the
// node's item count (every key it had is in it). So a change to one order key writes one counter
// per level in use — none below 64 publications, 2 up to 262 144, 3 up to ~16.7 M — not 7
// (cached by kv-store.ts, so a publication reads none of them in the common case). Counters of
// levels not (yet) in use, written by an earlier Hermod, are never read, and are overwritten when
// the level comes into use. Base 64 balances reads and writes: base 256 read ~2x the keys per
// page, base 16 wrote more counters.

import type { BatchOp, OrderedKv } from './kv.ts';

const SEP = '\0';
const FANOUT = 64;
/** Levels of counted buckets: 64^8 = 2^48 sequence numbers. */
export const LEVELS = 7;
const hex12 = (n: number): string => n.toString(16).padStart(12, '0');

/** The order key of a sequence number in a node. */
export const orderKey = (node: string, seq: number): string => `o${SEP}${node}${SEP}${hex12(seq)}`;
/** The sequence number of an order key. */
export const seqOfOrderKey = (key: string): number => parseInt(key.slice(-12), 16);
const bucketOf = (seq: number, level: number): number => Math.floor(seq / FANOUT ** level);
/** The counter key of a bucket at a level (1..LEVELS). */
export const counterKey = (node: string, level: number, bucket: number): string => `c${SEP}${node}${SEP}${level}${SEP}${hex12(bucket)}`;
/** All counter keys of a node, as exclusive bounds. */
export const countersOf = (node: string): { gt: string; lt: string } => ({ gt: `c${SEP}${node}${SEP}`, lt: `c${SEP}${node}\u0001` });

/** How many levels (from level 1 up) are counted for a node whose highest sequence number is `maxSeq`: those where it has left bucket 0. */
export function levelsInUse(maxSeq: number): number {
  let levels = 0;
  while (levels < LEVELS && maxSeq >= FANOUT ** (levels + 1)) levels++;
  return levels;
}

/**
 * The counter keys of levels 1..`levels` (default all) that change by `delta` when an order key
 * of `seq` is added (+1) or removed (-1).
 */
export function counterDeltas(node: string, seqs: Iterable<[seq: number, delta: number]>, levels = LEVELS): Map<string, number> {
  const deltas = new Map<string, number>();
  for (const [seq, delta] of seqs) {
    for (let level = 1; level <= levels; level++) {
      const k = counterKey(node, level, bucketOf(seq, level));
      deltas.set(k, (deltas.get(k) ?? 0) + delta);
    }
  }
  for (const [k, d] of deltas) if (d === 0) deltas.delete(k);
  return deltas;
}

/**
 * Applies counter deltas: `current` gives each counter's value now (0 when absent); puts the new
 * values (deletes counters that reach 0) into ops and returns them.
 */
export function applyDeltas(deltas: Map<string, number>, current: (key: string) => number, ops: BatchOp[]): Map<string, number> {
  const values = new Map<string, number>();
  for (const [k, d] of deltas) {
    const value = current(k) + d;
    values.set(k, value);
    ops.push(value > 0 ? { type: 'put', key: k, value: String(value) } : { type: 'del', key: k });
  }
  return values;
}

/** Number of order keys of the node with a sequence number below `seq`. */
export async function positionOf(db: OrderedKv, node: string, seq: number): Promise<number> {
  let before = 0;
  for (let level = LEVELS; level >= 1; level--) {
    const first = bucketOf(seq, level + 1) * FANOUT;
    const own = bucketOf(seq, level);
    if (own === first) continue;
    for await (const [, value] of db.entries({ gte: counterKey(node, level, first), lt: counterKey(node, level, own) })) before += Number(value);
  }
  const bucketStart = bucketOf(seq, 1) * FANOUT;
  if (seq > bucketStart) for await (const _ of db.keys({ gte: orderKey(node, bucketStart), lt: orderKey(node, seq) })) before++;
  return before;
}

/**
 * The order key at this position (0-based), or undefined past the end. `maxSeq` (the node's
 * highest sequence number so far) spares the range reads of levels that have one bucket only.
 */
export async function orderKeyAt(db: OrderedKv, node: string, index: number, maxSeq: number): Promise<string | undefined> {
  let remaining = index;
  let parent = 0;
  for (let level = LEVELS; level >= 1; level--) {
    if (bucketOf(maxSeq, level) === 0) continue; // every key is in bucket 0 of this level
    let chosen: number | undefined;
    for await (const [k, value] of db.entries({ gte: counterKey(node, level, parent * FANOUT), lt: counterKey(node, level, (parent + 1) * FANOUT) })) {
      const n = Number(value);
      if (remaining < n) {
        chosen = parseInt(k.slice(-12), 16);
        break;
      }
      remaining -= n;
    }
    if (chosen === undefined) return undefined;
    parent = chosen;
  }
  const from = parent * FANOUT;
  let found: string | undefined;
  for await (const k of db.keys({ gte: orderKey(node, from), lt: orderKey(node, from + FANOUT), limit: remaining + 1 })) found = k;
  return found;
}

/**
 * The counters of every node from its order keys (for stores written before the counters
 * existed). Hands the puts to `flush` in batches of about 10 000. Resolves to the order keys read.
 */
export async function rebuildCounters(db: OrderedKv, flush: (ops: BatchOp[]) => Promise<void>): Promise<number> {
  let node: string | undefined;
  let counts = new Map<string, number>();
  let pending: BatchOp[] = [];
  let keys = 0;
  const collect = async (): Promise<void> => {
    for (const [k, n] of counts) pending.push({ type: 'put', key: k, value: String(n) });
    counts = new Map();
    if (pending.length >= 10_000) {
      await flush(pending);
      pending = [];
    }
  };
  // Up to `o` + U+0001, not `o${SEP}\uffff`: a node id starting above U+FFFF sorts after U+FFFF in UTF-8 (kv-store.ts END).
  for await (const k of db.keys({ gt: `o${SEP}`, lt: `o\u0001` })) {
    const owner = k.slice(2, k.lastIndexOf(SEP));
    if (owner !== node) {
      await collect();
      node = owner;
    }
    const seq = seqOfOrderKey(k);
    for (let level = 1; level <= LEVELS; level++) {
      const c = counterKey(owner, level, bucketOf(seq, level));
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    keys++;
  }
  await collect();
  if (pending.length > 0) await flush(pending);
  return keys;
}
