// Request bodies for nano, as UTF-8 JSON in a Buffer. nano serialises an object body with
// JSON.stringify and a replacer function (called for every key and value: several times slower
// than a plain stringify), and axios then parses a string body back to check that it is JSON; a
// Buffer goes through both untouched, with nano's default content type application/json. In a
// partner Hermod's profile (fan-out to 4 partners) nano's `relax` and axios's `stringifySafely`
// were 14 % of its busy time, for `_bulk_docs` bodies alone. We keep nano (the project's CouchDB
// client) and hand it bodies it does not need to touch.

/** `value` as a JSON request body for nano's `body` (or a `bulk` call): a Buffer of UTF-8. */
export const jsonBody = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
