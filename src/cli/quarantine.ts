// `hermod quarantine`: the leaves whose per-subscription transform (or the write after it)
// failed, kept as files under dataDir/quarantine. Works on the files directly, so it runs beside
// a running Hermod: `retry` moves an entry to quarantine/retry/, which the running Hermod (or
// the next one started) processes again with the subscription's current stylesheet.

import { Quarantine, type QuarantineEntry } from '../transform/quarantine.ts';
import { configOrExit } from './ops.ts';

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
  const q = new Quarantine(config.dataDir);
  const ids = async (): Promise<string[]> => (id === 'all' ? (await q.list()).map((e) => e.id) : [id as string]);
  const valid = (x: string): boolean => /^[0-9a-f-]{36}$/.test(x);
  if (id !== undefined && !valid(id) && (id !== 'all' || action === 'show')) {
    err(`hermod quarantine ${action}: '${id}' is not a quarantine id (see 'hermod quarantine list')`);
    return 2;
  }
  switch (action) {
    case 'list': {
      const entries = await q.list();
      const waiting = await q.pendingRetries();
      if (json) out(JSON.stringify({ entries: entries.map(({ payload: _p, ...e }) => e), retrying: waiting.map((e) => e.id) }, null, 2));
      else {
        for (const e of entries) out(summary(e));
        out(`${entries.length} quarantined${waiting.length ? `, ${waiting.length} waiting for a retry by the running Hermod` : ''}`);
      }
      return 0;
    }
    case 'show': {
      const entry = await q.get(id as string);
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
      for (const x of await ids()) {
        const ok = action === 'retry' ? await q.retry(x) : await q.drop(x);
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
