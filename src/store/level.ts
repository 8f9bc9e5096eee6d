// Embedded durable Store on LevelDB (classic-level: prebuilt binaries, no server): the
// key-value Store (kv-store.ts, which documents the key layout) over one LevelDB database under
// dataDir. Every multi-key change is one atomic batch, so a crash (kill -9) between two writes
// never leaves half a change. With `sync: false` (default) an acknowledged write survives a
// process crash (it is in the OS before the call resolves); `sync: true` also fsyncs, for power
// loss, at a cost per write.

import { ClassicLevel } from 'classic-level';
import { KvStore, type KvStoreOptions } from './kv-store.ts';
import type { BatchOp, KvRange, OrderedKv } from './kv.ts';

export interface LevelStoreOptions {
  sync?: boolean;
}

/** LevelDB as an OrderedKv (utf8 keys compare as UTF-8 bytes). */
export class LevelKv implements OrderedKv {
  private readonly db: ClassicLevel<string, string>;
  private readonly sync: boolean;

  constructor(
    readonly location: string,
    options: LevelStoreOptions = {},
  ) {
    this.db = new ClassicLevel<string, string>(location, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    this.sync = options.sync ?? false;
  }

  open(): Promise<void> {
    return this.db.open();
  }
  close(): Promise<void> {
    return this.db.close();
  }
  get(key: string): Promise<string | undefined> {
    return this.db.get(key);
  }
  getMany(keys: string[]): Promise<Array<string | undefined>> {
    return this.db.getMany(keys);
  }
  async batch(ops: BatchOp[]): Promise<void> {
    if (ops.length > 0) await this.db.batch(ops, { sync: this.sync });
  }
  entries(range: KvRange): AsyncIterable<[string, string]> {
    return this.db.iterator({ ...range, limit: range.limit ?? -1 });
  }
  keys(range: KvRange): AsyncIterable<string> {
    return this.db.keys({ ...range, limit: range.limit ?? -1 });
  }
}

export class LevelStore extends KvStore {
  constructor(location: string, options: LevelStoreOptions & KvStoreOptions = {}) {
    super(new LevelKv(location, options), options);
  }
}
