// What a CouchDB answer says about the database itself rather than about the request: shared by
// the CouchDB store (couchdb.ts), the CouchDB sink (src/sinks/couchdb.ts) and start-up
// (src/app/wait-for.ts: waiting for a CouchDB that is not up yet, and messages that say what to do).

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

/**
 * The longest Hermod waits for one CouchDB request (ms; axios `timeout`, given to every nano
 * client): a CouchDB that accepts the connection and never answers (a stalled VM, a frozen disk)
 * fails the request as unreachable (ECONNABORTED) instead of holding whatever waits on it for
 * good — cluster rounds, node-lock renewals, a stop. Above the changes feeds' 25 s longpolls and
 * any sane bulk request.
 */
export const COUCH_REQUEST_TIMEOUT_MS = 120_000;

/** Node's network error codes that mean "nobody answered": worth trying again. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * The network error code of a CouchDB client error: Node's (`code`, or its cause's), or the one
 * nano names in the message it rejects with when no HTTP answer came ("error happened in your
 * connection. Reason: connect ECONNREFUSED …": nano keeps no code on that error).
 */
function networkCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown }; message?: unknown };
  const code = e?.code ?? e?.cause?.code;
  if (typeof code === 'string') return code;
  const message = String(e?.message ?? '');
  // axios' own timeout (COUCH_REQUEST_TIMEOUT_MS), as nano words it: no code kept either.
  if (/^error happened in your connection\. Reason: timeout of \d+ms exceeded/.test(message)) return 'ECONNABORTED';
  const nano = /^error happened in your connection\. Reason: (?:\w+ )?([A-Z][A-Z_]+)\b/.exec(message);
  return nano?.[1];
}

/**
 * Whether a CouchDB client error (nano's, or its cause) means the server did not answer — a
 * network error or HTTP 5xx — rather than an answer (4xx).
 */
export function couchUnreachable(err: unknown): boolean {
  const status = (err as { statusCode?: unknown })?.statusCode;
  if (typeof status === 'number') return status >= 500;
  // Only what may change by waiting: a TLS or protocol error (a self-signed certificate, https
  // to an http port) is an answer that says the URL is wrong.
  const code = networkCode(err);
  if (code !== undefined) return NETWORK_CODES.has(code);
  return /^error happened in your connection\. Reason: socket hang up/.test(String((err as { message?: unknown })?.message ?? '')); // closed without an answer
}

/**
 * What a CouchDB client error means, for a message that says what to do: nobody answering (is
 * CouchDB running there?), refused credentials, a missing database, or CouchDB's own answer.
 * `key` names the config key of the URL, `dbKey` the one of the database name.
 */
export function describeCouchFailure(err: unknown, at: { key: string; dbKey?: string }): string {
  const e = err as { statusCode?: number; code?: string; cause?: { code?: string }; reason?: string; message?: string };
  const status = e?.statusCode;
  if (status === 401) return `CouchDB refused the credentials (HTTP 401): check the user:password in ${at.key}`;
  if (status === 403) return `forbidden (HTTP 403): the user in ${at.key} may not read it`;
  if (status === 404) return `no such database (HTTP 404)${at.dbKey ? `: check ${at.dbKey}, or create it` : ''}`;
  if (typeof status === 'number') return `CouchDB answered HTTP ${status}${e.reason ?? e.message ? ` (${e.reason ?? e.message})` : ''}`;
  if (couchUnreachable(err)) return `nothing answers (${networkCode(err) ?? e?.message}): is CouchDB running at ${at.key}?`;
  const text = String(e?.message ?? err).replace(/^error happened in your connection\. Reason: /, '');
  if (/certificate|SSL|TLS|EPROTO|HPE_|wrong version number/i.test(text)) return `TLS or protocol error (${text}): check the scheme (http or https) and the certificate of ${at.key}`;
  return text;
}
