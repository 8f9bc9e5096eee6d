// `hermod migrate`: copies a whole store from one backend to another, entry by entry at the
// key-value level (so nodes, configuration, affiliations, subscriptions, items, archives and
// their bookkeeping arrive exactly as they were). The target must be empty; the source is only
// read. Hermod must not be running on the source (LevelDB refuses a second opener anyway).

import { LAYOUT_KEY } from './kv-store.ts';
import type { OrderedKv } from './kv.ts';

const BATCH = 500;

export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationError';
  }
}

/** Copies every entry of `from` into `to` (both open); resolves to the number copied. */
export async function copyStore(from: OrderedKv, to: OrderedKv, onProgress?: (copied: number) => void): Promise<number> {
  // A store opened once but never written holds only its layout mark, which the copy overwrites.
  for await (const k of to.keys({ limit: 2 })) if (k !== LAYOUT_KEY) throw new MigrationError('the target store is not empty (migrate only into an empty store)');
  let copied = 0;
  let ops: Array<{ type: 'put'; key: string; value: string }> = [];
  const flush = async (): Promise<void> => {
    await to.batch(ops);
    copied += ops.length;
    ops = [];
    onProgress?.(copied);
  };
  for await (const [key, value] of from.entries({})) {
    ops.push({ type: 'put', key, value });
    if (ops.length >= BATCH) await flush();
  }
  if (ops.length > 0) await flush();
  return copied;
}
