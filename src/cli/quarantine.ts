// `hermod quarantine`: the leaves whose per-subscription transform (or the write after it)
// failed, kept in the store (src/transform/quarantine.ts). Asks the Hermod running on the config's
// dataDir over its status socket, or, with none running, opens the store itself: `retry` marks an
// entry, which the running Hermod (or the next one started) processes again with the
// subscription's current stylesheet.

import { askQuarantine } from '../ops/status.ts';
import { createStore } from '../store/backends.ts';
import { Quarantine, QUARANTINE_SPACE, quarantineRequest, type QuarantineEntry, type QuarantineRequest, type QuarantineResponse } from '../transform/quarantine.ts';
import type { HermodConfig } from '../config/config.ts';
import { configOrExit } from './ops.ts';

/** The request answered by the running Hermod, else by the store opened here. */
async function ask(config: HermodConfig, request: QuarantineRequest): Promise<QuarantineResponse> {
  const answer = await askQuarantine(config.dataDir, request);
  if (answer) return answer;
  const store = createStore(config);
  await store.open();
  try {
    return await quarantineRequest(new Quarantine(store.state(QUARANTINE_SPACE), { legacyDir: config.dataDir }), request);
  } finally {
    await store.close();
  }
}

const out = (line: string): void => void process.stdout.write(`${line}\n`);
const err = (line: string): void => void process.stderr.write(`${line}\n`);
const USAGE = 'usage: hermod quarantine list|show ID|retry ID|all|drop ID|all --config FILE [--json]';

const summary = (e: QuarantineEntry): string =>
  [e.id, new Date(e.at).toISOString(), `${e.partner ?? e.service} ${e.node} ${e.itemId}`, `attempts ${e.attempts}`, e.reason.replace(/\s+/g, ' ').slice(0, 200)].join('  ');

export async function quarantine(configFile: string | undefined, args: string[], json: boolean): Promise<number> {
  const [action, id, ...extra] = args;
  if (!action || extra.length > 0 || (action === 'list' ? id !== undefined : id === undefined)) {
    err(USAGE);
    return 2;
  }
  const config = await configOrExit('quarantine', configFile);
  if (typeof config === 'number') return config;
  const valid = (x: string): boolean => /^[0-9a-f-]{36}$/.test(x);
  if (id !== undefined && !valid(id) && (id !== 'all' || action === 'show')) {
    err(`hermod quarantine ${action}: '${id}' is not a quarantine id (see 'hermod quarantine list')`);
    return 2;
  }
  if (action !== 'list' && action !== 'show' && action !== 'retry' && action !== 'drop') {
    err(USAGE);
    return 2;
  }
  let answer: QuarantineResponse;
  try {
    answer = await ask(config, { action, ...(id !== undefined ? { id } : {}) });
  } catch (e) {
    err(`hermod quarantine ${action}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  switch (action) {
    case 'list': {
      const entries = answer.entries ?? [];
      const waiting = answer.retrying ?? [];
      if (json) out(JSON.stringify({ entries: entries.map(({ payload: _p, ...e }) => e), retrying: waiting }, null, 2));
      else {
        for (const e of entries) out(summary(e));
        out(`${entries.length} quarantined${waiting.length ? `, ${waiting.length} waiting for a retry by the running Hermod` : ''}`);
      }
      return 0;
    }
    case 'show': {
      const entry = answer.entry;
      if (!entry) {
        err(`hermod quarantine show: no entry ${id}`);
        return 1;
      }
      if (json) out(JSON.stringify(entry, null, 2));
      else {
        const { payload, ...rest } = entry;
        for (const [k, v] of Object.entries(rest)) out(`${k}: ${k === 'at' ? new Date(v as number).toISOString() : String(v)}`);
        out('payload:');
        out(payload);
      }
      return 0;
    }
    case 'retry':
    case 'drop': {
      let missing = 0;
      for (const { id: x, ok } of answer.results ?? []) {
        if (ok) out(`${action === 'retry' ? 'queued for retry' : 'dropped'}: ${x}`);
        else {
          err(`hermod quarantine ${action}: no entry ${x}`);
          missing++;
        }
      }
      return missing > 0 ? 1 : 0;
    }
    default:
      err(USAGE);
      return 2;
  }
}
