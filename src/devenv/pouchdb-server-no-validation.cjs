// Preloaded (`node --require`) into a pouchdb-server that the benchmark runs as a stand-in for
// CouchDB: starts express-pouchdb without its `validation` part (pouchdb-validation), as
// express-pouchdb's own `overrideMode.exclude` allows; pouchdb-server's command line has no way
// to say so. Why: for every document of every `_bulk_docs` that comes over HTTP, that plugin
// lists the database's design documents (a LevelDB iterator opened, sought and closed, with the
// bodies read), even when there are none; CouchDB keeps a database's validation functions in
// memory and has no such per-document cost. A `_replicate` run inside pouchdb-server writes
// in-process and never pays it, so with the plugin on, a comparison of HTTP writers against it
// measures this stand-in's artefact. The benchmark's databases have no validate_doc_update, so
// nothing else changes. Tests and the demo do not use this (they keep validation: some tests
// need validate_doc_update).
'use strict';

const entry = require.resolve('express-pouchdb');
const expressPouchDB = require(entry);

/** express-pouchdb's factory, `(startPouchDB?, opts?)`, with `validation` excluded from `opts`. */
function withoutValidation(startPouchDB, opts) {
  if (startPouchDB && !startPouchDB.defaults) {
    opts = startPouchDB;
    startPouchDB = null;
  }
  opts = Object.assign({}, opts);
  const override = Object.assign({}, opts.overrideMode);
  override.exclude = (override.exclude || []).concat(['validation']);
  opts.overrideMode = override;
  return startPouchDB ? expressPouchDB(startPouchDB, opts) : expressPouchDB(opts);
}

require.cache[entry].exports = withoutValidation;
