// Sink: writes replicated documents into a CouchDB database the way CouchDB's own replicator
// does — `_bulk_docs` with `new_edits: false` and the `_revisions` history — so revisions and
// conflicts are CouchDB's own and writing a revision twice changes nothing. Every imported
// revision is remembered (before the write) so the local source does not publish it back.
// Writes and retractions of one document run one at a time, in the order they were called
// (notifications are handled concurrently): a retraction is decided on after the revisions
// that came before it are written.

import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { DocumentScope } from 'nano';
import type { CouchDoc, Json } from '../codecs/couch-doc.ts';
import type { Logger } from '../log.ts';
import type { ReplicationState } from '../replication/state.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { download } from './download.ts';

/** Replaces attachment references (XEP-0363 uploads) by their verified bytes. */
async function fetchAttachments(doc: CouchDoc): Promise<void> {
  const attachments = doc._attachments as Record<string, { hermod_url?: string; hermod_sha256?: string; length?: number; content_type?: string }> | undefined;
  for (const [name, att] of Object.entries(attachments ?? {})) {
    if (typeof att.hermod_url !== 'string') continue;
    if (typeof att.hermod_sha256 !== 'string' || typeof att.length !== 'number') throw new Error(`attachment ${name} of ${doc._id}: reference without length or SHA-256`);
    const bytes = await download(att.hermod_url, att.length, att.hermod_sha256);
    (attachments as Record<string, unknown>)[name] = { content_type: att.content_type ?? 'application/octet-stream', data: bytes.toString('base64') };
  }
}

/** Most documents per `_bulk_docs` request of the sink. */
const MAX_BULK_DOCS = 200;

export class CouchSink {
  written = 0;

  constructor(
    private readonly db: DocumentScope<unknown>,
    private readonly state: ReplicationState,
    private readonly log: Logger,
  ) {}

  private readonly queue: Array<{ docs: CouchDoc[]; done: (err?: Error) => void }> = [];
  /** Per document id: writes and retractions in call order. */
  private readonly docs = new KeyedMutex();
  private flushing = false;

  /**
   * One `_bulk_docs` request at a time; writes that come meanwhile (notifications are handled
   * concurrently) wait and go together in the next request — one round trip for many documents
   * instead of one each. A write resolves once its request has succeeded, in arrival order.
   */
  private bulk(docs: CouchDoc[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ docs, done: (err) => (err ? reject(err) : resolve()) });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const group: typeof this.queue = [];
        let count = 0;
        while (this.queue.length > 0 && (group.length === 0 || count + (this.queue[0] as { docs: CouchDoc[] }).docs.length <= MAX_BULK_DOCS)) {
          const next = this.queue.shift() as (typeof this.queue)[number];
          group.push(next);
          count += next.docs.length;
        }
        let res: Array<{ id?: string; error?: string; reason?: string }>;
        try {
          // nano's types lack new_edits, which CouchDB's replication protocol uses.
          res = (await this.db.bulk({ docs: group.flatMap((g) => g.docs) as never[], new_edits: false } as never)) as unknown as typeof res;
        } catch (err) {
          for (const g of group) g.done(err as Error);
          continue;
        }
        // With new_edits=false CouchDB lists only the documents it refused (by id).
        const refused = new Map<string, { error?: string; reason?: string }>();
        for (const row of Array.isArray(res) ? res : []) if (row.error) refused.set(row.id ?? '', row);
        for (const g of group) {
          const id = (g.docs[0] as CouchDoc)._id;
          const failed = refused.get(id) ?? (refused.size > 0 && refused.has('') ? refused.get('') : undefined);
          g.done(failed ? new Error(`CouchDB refused ${id}: ${failed.error} ${failed.reason ?? ''}`) : undefined);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Writes revisions of one document (each with its history and inline attachments), after the
   * writes and retractions of that document called before. Throws when a revision has no
   * `_revisions`, an attachment reference does not verify, or CouchDB refuses the write.
   */
  write(docs: CouchDoc[]): Promise<void> {
    const first = docs[0];
    if (!first) return Promise.resolve();
    for (const doc of docs) if (!doc._revisions) return Promise.reject(new Error(`document ${doc._id} ${doc._rev} carries no _revisions history`));
    return this.docs.run(first._id, () => this.writeNow(first._id, docs));
  }

  private async writeNow(id: string, docs: CouchDoc[]): Promise<void> {
    for (const doc of docs) await fetchAttachments(doc);
    await this.state.markRevs(id, docs.map((d) => d._rev), 'i');
    await this.bulk(docs);
    this.written += docs.length;
    this.log.debug('document written', { doc: id, revs: docs.map((d) => d._rev) });
  }

  /**
   * Writes a document that has no revision history of its own (the output of a transform) as
   * the next revision of the local one, through the same path as replicated revisions (marked
   * imported before the write, so it is not published back). The revision id is derived from
   * the content and the previous revision, so writing the same output twice adds nothing.
   * Returns false when the local document already has this content.
   */
  upsert(content: { _id: string; [key: string]: Json }): Promise<boolean> {
    return this.docs.run(content._id, () => this.upsertNow(content));
  }

  private async upsertNow(content: { _id: string; [key: string]: Json }): Promise<boolean> {
    let current: (CouchDoc & { _revisions?: { start: number; ids: string[] } }) | undefined;
    try {
      current = (await this.db.get(content._id, { revs: true })) as unknown as typeof current;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
    const { _rev: _r, _revisions: _h, ...body } = content;
    if (current) {
      const { _rev, _revisions, ...was } = current;
      if (isDeepStrictEqual(was, body)) return false;
    }
    const start = (current?._revisions?.start ?? 0) + 1;
    const hash = createHash('md5').update(`${current?._rev ?? ''}\n${JSON.stringify(body)}`).digest('hex');
    const doc = { ...body, _rev: `${start}-${hash}`, _revisions: { start, ids: [hash, ...(current?._revisions?.ids ?? [])] } } as CouchDoc;
    await this.writeNow(doc._id, [doc]);
    return true;
  }

  /**
   * A retraction, after the writes of that document called before it. The local document is
   * deleted (as a new revision of this site, not a purge) only when its winning revision came
   * from a partner and `keep` — asked with that revision, e.g. whether the source still offers
   * the document or already sent its deletion — gives no reason to keep it. A local edit is never
   * deleted by a remote retraction (CouchDB semantics: an edit beats a concurrent deletion), and
   * a document that is deleted already (a replayed retraction) is left as it is. Resolves to
   * whether a deletion revision was written.
   */
  remove(docId: string, keep: (current: CouchDoc) => Promise<string | undefined>): Promise<boolean> {
    return this.docs.run(docId, () => this.removeNow(docId, keep));
  }

  private async removeNow(docId: string, keep: (current: CouchDoc) => Promise<string | undefined>): Promise<boolean> {
    let current: CouchDoc;
    try {
      current = (await this.db.get(docId)) as unknown as CouchDoc;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false;
      throw err;
    }
    const reason = (await this.state.revKind(docId, current._rev)) === 'i' ? await keep(current) : 'its current revision is a local edit';
    if (reason !== undefined) {
      this.log.debug('partner retraction: document kept', { doc: docId, rev: current._rev, reason });
      return false;
    }
    let res: { rev: string };
    try {
      res = await this.db.destroy(docId, current._rev);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 409) throw err;
      this.log.debug('retraction not applied: the document changed meanwhile', { doc: docId });
      return false;
    }
    await this.state.markRevs(docId, [res.rev], 'i');
    this.log.debug('document deleted by partner retraction', { doc: docId, rev: res.rev });
    return true;
  }
}
