// What a CouchDB answer says about the database itself rather than about the request: shared by
// the CouchDB store (couchdb.ts) and the CouchDB sink (src/sinks/couchdb.ts).

/**
 * Whether a CouchDB request failed because the database is not there (yet): pouchdb-server
 * answers 404 `{"error":"not_found","reason":"no_db_file"}` for a moment after it starts (its
 * list of databases is not read yet), CouchDB 404 "Database does not exist.". Such an answer
 * says nothing about the document asked for (not "missing"): the request may be tried again.
 * `err` is what nano rejects with (statusCode, error, reason, message).
 */
export function databaseMissing(err: unknown): boolean {
  const { statusCode, error, reason, message } = (err ?? {}) as { statusCode?: number; error?: unknown; reason?: unknown; message?: unknown };
  return [error, reason, message].includes('no_db_file') || (statusCode === 404 && /database/i.test(String(reason)));
}
