// Worker thread for XSLT transforms (plain JS: it runs outside tsx). Receives
// {id, sef, source, params} and answers {id, ok, output} or {id, ok: false, error}; says
// {ready: true} once saxon-js is loaded. The parent
// bounds time by terminating this worker, so a runaway stylesheet never blocks Hermod.
import { parentPort } from 'node:worker_threads';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const SaxonJS = require('saxon-js');
// Loaded: the parent starts timing transforms only now (loading saxon-js is not the stylesheet's time).
parentPort.postMessage({ ready: true });

parentPort.on('message', ({ id, sef, source, params }) => {
  try {
    const result = SaxonJS.transform({ stylesheetText: sef, sourceText: source, destination: 'serialized', stylesheetParams: params }, 'sync');
    parentPort.postMessage({ id, ok: true, output: String(result.principalResult ?? '') });
  } catch (err) {
    const message = err && (err.message || String(err));
    const code = err && err.code ? String(err.code) : undefined;
    parentPort.postMessage({ id, ok: false, error: code ? `${code}: ${message}` : message });
  }
});
