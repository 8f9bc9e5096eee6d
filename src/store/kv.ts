// The ordered key-value map the key-value Store (kv-store.ts) runs on: string keys ordered as
// UTF-8 bytes, string values, range reads and batched writes. Backends: LevelDB (level.ts) and
// CouchDB (couchdb.ts). It holds no pub/sub knowledge; `hermod migrate` copies one map into
// another entry by entry.

export type BatchOp = { type: 'put'; key: string; value: string } | { type: 'del'; key: string };

/** A key range; bounds are optional, `limit` -1 or absent means no limit. */
export interface KvRange {
  gt?: string;
  gte?: string;
  lt?: string;
  lte?: string;
  reverse?: boolean;
  limit?: number;
}

export interface OrderedKv {
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: string): Promise<string | undefined>;
  getMany(keys: string[]): Promise<Array<string | undefined>>;
  /** Applies every op; on LevelDB atomically. A write resolves once it is durable for the backend. */
  batch(ops: BatchOp[]): Promise<void>;
  /**
   * Compare-and-set against other writers of the same map (CouchDB: the document revision).
   * Absent on maps only one process writes (LevelDB): KvStore then checks under its own lock.
   */
  swap?(key: string, expected: string | undefined, next: string | undefined): Promise<boolean>;
  entries(range: KvRange): AsyncIterable<[string, string]>;
  keys(range: KvRange): AsyncIterable<string>;
  /** Present when several processes may share the map (SharedKv). */
  readonly shared?: SharedKv;
}

export async function all<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const value of iterable) out.push(value);
  return out;
}

/**
 * What a map shared by several Hermod processes (CouchDB) offers beyond OrderedKv: versioned
 * reads and conditional writes (the revision checks racing writes are decided by), and the keys
 * other processes changed (their `_changes` feed). Embedded maps (LevelDB, memory) have one
 * process and none of this.
 */
export interface SharedKv {
  /** The value and its version ('' when the key is absent). */
  versioned(key: string): Promise<{ value?: string; version: string }>;
  /**
   * Puts `value` (undefined: deletes the key) if the key is still at `version` ('' = absent).
   * Resolves to the new version ('' after a delete), or undefined when someone else wrote the
   * key meanwhile (a conflict: nothing was written). Rejects on store failure.
   */
  putIf(key: string, value: string | undefined, version: string): Promise<string | undefined>;
  /**
   * Calls `listener` with the keys other processes changed (this process's own writes are left
   * out), from now on, in the order the store applied them; resolves once following has begun.
   * Returns the function that stops listening.
   */
  watch(listener: (keys: string[]) => void): Promise<() => void>;
}
