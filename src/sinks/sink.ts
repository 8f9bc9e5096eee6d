// What a sink is to replication: the local side that writes what partners publish (leaves of
// followed nodes) and applies their retractions. Sinks (couchdb.ts, midgard-spool.ts) depend on
// codecs and the replication state only; the partner side (src/replication/follow-delivery.ts) and
// the XSLT stage call them through this interface. Leaves that arrive together (a page of a
// catch-up) are handed over as one batch (`writeItems`), so a sink that can write many at once
// (one `_bulk_docs`) may; `writeLeaves` falls back to one at a time. A batching sink is also
// called concurrently (live notifications, a page of history): it keeps the writes and
// retractions of one document in call order itself.

import type { Element } from 'ltx';

/** The local side of replication: writes what partners publish. */
export interface PartnerSink {
  /** Writes one item (leaf) of a followed node; false when it was skipped (logged by the sink). */
  writeItem(service: string, node: string, item: Element, partner?: string): Promise<boolean>;
  /**
   * Writes a batch of leaves, in order; resolves to whether each was written (false: skipped).
   * Optional: without it, writeLeaves writes them one at a time. Rejects when one could not be
   * written (with writeTogether the others are still written).
   */
  writeItems?(leaves: PartnerLeaf[]): Promise<boolean[]>;
  /** An item retracted from a followed node; `followed` says whether another node of that service is followed. */
  retract(service: string, node: string, itemId: string, followed: (node: string) => boolean, partner?: string): Promise<void>;
  /**
   * Optional, for a sink whose `retract` undoes what a leaf wrote (deletes the document): called
   * after a retraction of `leaf.itemId` by `leaf.service` was applied, and again before a
   * `hermod quarantine retry` writes it, for a leaf of that item this sink refused and the
   * quarantine holds (`payload`: the item's payload as received). Resolves true when the leaf is
   * withdrawn — the service offers the item on none of its nodes, and writing the leaf could undo
   * the retraction (bring back a document it deleted) — and the quarantine then drops it; false
   * keeps it (a deletion leaf, say: written, it leaves the document deleted).
   * Rejects when that cannot be told now (a node did not answer): the entry is kept. Without this
   * method quarantined leaves outlive retractions (Midgard: deletions travel as leaves).
   */
  withdrawn?(leaf: { service: string; node: string; itemId: string; partner?: string; payload: string }): Promise<boolean>;
  /** Optional: writes what it holds back and resolves once every write called so far has settled (on stop). */
  close?(): Promise<void>;
}

/**
 * A write the local side refuses for the leaf itself (CouchDB refuses the document, a revision
 * without history, an attachment that does not verify): writing it again gives the same answer,
 * so it is not tried again (the sink logged why); the XSLT stage (src/replication/transforms.ts),
 * through which replication writes, puts the leaf in the quarantine and goes on. Any other
 * rejection (the database or the store unavailable) may pass, and replication tries again.
 */
export class RefusedWrite extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RefusedWrite';
  }
}

/** A leaf of a followed node, with where it came from. */
export interface PartnerLeaf {
  service: string;
  node: string;
  item: Element;
  /** The partner (contact JID) the service belongs to, when known. */
  partner?: string;
}

/**
 * Writes a batch of leaves through the sink's batch write, else one at a time; resolves to which
 * were written. Rejects when one could not be written: a RefusedWrite when only refused ones
 * failed (one at a time, a refused leaf is skipped: false).
 */
export async function writeLeaves(sink: PartnerSink, leaves: PartnerLeaf[]): Promise<boolean[]> {
  if (sink.writeItems) return sink.writeItems(leaves);
  const written: boolean[] = [];
  for (const { service, node, item, partner } of leaves) {
    written.push(
      await sink.writeItem(service, node, item, partner).catch((err: unknown) => {
        if (err instanceof RefusedWrite) return false;
        throw err;
      }),
    );
  }
  return written;
}

/**
 * Writes a batch by starting every leaf's `write` at once, in order (a sink that batches collects
 * them into one flush and keeps the order of each document's writes itself). Waits for all of
 * them: one that fails does not stop the others. Resolves to which were written; rejects, once
 * all have settled, with an Error saying how many failed and the first reason (a RefusedWrite
 * when every failure was one).
 */
export async function writeTogether(leaves: PartnerLeaf[], write: (leaf: PartnerLeaf) => Promise<boolean>): Promise<boolean[]> {
  const settled = await Promise.allSettled(leaves.map(async (leaf) => write(leaf)));
  const failed = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
  // Refused leaves only (each logged by the sink): a RefusedWrite, so that the caller skips them.
  if (failed.length > 0) throw new (failed.every((e) => e instanceof RefusedWrite) ? RefusedWrite : Error)(`${failed.length} of ${leaves.length} leaves not written; first: ${String(failed[0])}`);
  return settled.map((s) => (s as PromiseFulfilledResult<boolean>).value);
}
