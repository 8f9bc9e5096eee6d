// A known fault of pouchdb-server, told to the operator: its validation plugin
// (pouchdb-validation 4.2.0, in express-pouchdb) sets the `_revisions` of every document written
// to those of the stored document before the write, so a `_bulk_docs` with `new_edits: false` —
// how a CouchSink writes partners' revisions — of a document the database already holds inserts
// nothing and answers success, while any design document has a `validate_doc_update`. Partners'
// edits are then lost without an error (new documents are written, without their history).
// CouchDB itself is not affected. Hermod cannot write around it (the plugin rewrites the request
// inside the server), so it says so, once per database and set of design documents, as an error.

import type { DocumentScope } from 'nano';
import type { Logger } from '../log.ts';

/** Tells, once per database and set of design documents, when a database is affected (see the head comment). */
export class PouchValidationCheck {
  /** Per database: the design documents with a validation function last told of (sorted, joined). */
  private readonly told = new Map<string, string>();

  constructor(private readonly log: Pick<Logger, 'error'>) {}

  /**
   * Looks whether `db` is served by pouchdb-server (its welcome document names express-pouchdb)
   * and has design documents with `validate_doc_update`; if so, logs an error naming them and
   * the way out (not again while they stay the same). Two requests (`GET /`, `_all_docs` of the
   * `_design/` range). Resolves to the design documents found (empty: not affected); rejects
   * with nano's error when the server cannot be asked.
   */
  async check(db: DocumentScope<unknown>): Promise<string[]> {
    const welcome = (await db.server.info()) as unknown as Record<string, unknown>;
    if (!('express-pouchdb' in welcome)) return [];
    const rows = (await db.list({ startkey: '_design/', endkey: '_design0', include_docs: true })).rows;
    const guarded: string[] = [];
    for (const row of rows) if (typeof (row.doc as { validate_doc_update?: unknown } | undefined)?.validate_doc_update === 'string') guarded.push(row.id);
    const key = `${db.config.url}/${db.config.db}`;
    const what = guarded.sort().join('\n');
    if ((this.told.get(key) ?? '') === what) return guarded;
    this.told.set(key, what);
    if (guarded.length > 0) {
      this.log.error("pouchdb-server drops partners' revisions of documents this database holds while a design document has validate_doc_update (pouchdb-validation replaces the _revisions of replicated writes): partners' edits are lost here without an error; use CouchDB, or remove the validation function", {
        db: db.config.db,
        designDocs: guarded,
        server: typeof welcome.version === 'string' ? `pouchdb-server ${welcome.version}` : 'pouchdb-server',
      });
    }
    return guarded;
  }
}
