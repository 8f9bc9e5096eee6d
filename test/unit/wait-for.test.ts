// Start-up's wait for a CouchDB that is not up yet (src/app/wait-for.ts): what counts as "try
// again", what ends the wait at once, and that a stop signal ends it even while an attempt hangs
// (a server that accepted the connection and never answers).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StartAborted, untilReachable } from '../../src/app/wait-for.ts';
import type { Logger } from '../../src/log.ts';

function recordingLog(): { log: Logger; lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, ...(fields ? { fields } : {}) });
  const log = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), trace: at('trace'), child: () => log } as unknown as Logger;
  return { log, lines };
}

const awaited = { what: 'application database', key: 'appDb.url', where: 'http://127.0.0.1:1/app' };
const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });

describe('untilReachable: waiting for CouchDB at start', () => {
  it('tries again while nothing answers, logging the first failure at error and naming the key, then returns', async () => {
    const { log, lines } = recordingLog();
    let tries = 0;
    const value = await untilReachable(awaited, async () => (++tries < 3 ? Promise.reject(refused) : 'open'), { log, unreachable: (e) => (e as { code?: string }).code === 'ECONNREFUSED', firstWaitMs: 5 });
    assert.equal(value, 'open');
    assert.equal(tries, 3);
    assert.deepEqual(lines.map((l) => l.level), ['error', 'warn', 'info']);
    assert.match(lines[0]?.msg ?? '', /is CouchDB running at appDb\.url\?/);
    assert.equal(lines[0]?.fields?.key, 'appDb.url');
  });

  it('an answer that refuses ends the wait at once with that error', async () => {
    const { log } = recordingLog();
    const denied = Object.assign(new Error('unauthorized'), { statusCode: 401 });
    await assert.rejects(untilReachable(awaited, () => Promise.reject(denied), { log, unreachable: () => false }), (e: unknown) => e === denied);
  });

  it('an attempt that never answers counts as not reachable; a stop signal ends the wait while one hangs', async () => {
    const { log, lines } = recordingLog();
    const stop = new AbortController();
    let tries = 0;
    const waiting = untilReachable(awaited, () => (tries++, new Promise<never>(() => undefined)), { log, unreachable: () => false, signal: stop.signal, attemptTimeoutMs: 20, firstWaitMs: 5 });
    for (let i = 0; i < 200 && tries < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(tries >= 2, 'the hanging attempt timed out and another was made');
    assert.match(String(lines[0]?.fields?.reason), /no answer within/);
    stop.abort();
    await assert.rejects(waiting, (e: unknown) => e instanceof StartAborted);
  });
});
