// One interface for every source of changes a replication publishes: the CouchDB changes feed
// (couchdb-changes.ts), Midgard's D-Bus signals (midgard-dbus.ts) and the Midgard spool
// (midgard-spool.ts). A source hands over batches of changes, in order and one at a time (the
// next batch only after the handler resolved), each with the checkpoint that resumes right
// after it. The replication (src/replication/replication.ts) saves that checkpoint once the
// batch is published, and gives it back at the next start: nothing handled is handed over
// again, nothing unhandled is skipped.

/** Where a source resumes (opaque to everyone but the source: a CouchDB seq, …). */
export type Checkpoint = string | number;

/** One batch of changes. */
export interface SourceBatch<C> {
  changes: C[];
  /**
   * Where to resume once this batch is handled. Absent when the source keeps its own position
   * (the spool moves a handled file to done/) or has none (D-Bus signals are not replayed).
   */
  checkpoint?: Checkpoint;
}

/** Handles one batch; rejects when the batch could not be handled (see each source for what follows). */
export type BatchHandler<C> = (batch: SourceBatch<C>) => Promise<void>;

export interface Source<C> {
  /** The name its checkpoint is kept under (e.g. `couchdb:<db>`). */
  readonly feed: string;
  /**
   * Starts handing batches to `handle`, from right after `since` (a checkpoint of an earlier
   * batch; undefined: from the beginning, or now for a live-only source). Resolves once started.
   */
  start(since: Checkpoint | undefined, handle: BatchHandler<C>): Promise<void>;
  /** Stops handing over and waits for the batch under way. */
  stop(): Promise<void>;
}

/** Where checkpoints are kept (ReplicationState). */
export interface CheckpointStore {
  checkpoint(feed: string): Promise<Checkpoint | undefined>;
  setCheckpoint(feed: string, checkpoint: Checkpoint): Promise<void>;
}

/**
 * Starts `source` from its saved checkpoint; each batch goes to `publish`, then its checkpoint is
 * saved. A publish or save that rejects leaves the checkpoint before the batch (the source's
 * own rule says whether it is handed over again now or at the next start).
 */
export async function startSource<C>(source: Source<C>, checkpoints: CheckpointStore, publish: (changes: C[]) => Promise<void>): Promise<void> {
  await source.start(await checkpoints.checkpoint(source.feed), async (batch) => {
    await publish(batch.changes);
    if (batch.checkpoint !== undefined) await checkpoints.setCheckpoint(source.feed, batch.checkpoint);
  });
}
