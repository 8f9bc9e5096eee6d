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
}

export async function all<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const value of iterable) out.push(value);
  return out;
}
