// Start-up against a service that is not up yet. A Hermod started at boot may come before its
// CouchDB (the application database, the CouchDB store), as before its XMPP server: it waits for
// them — the first failure logged at error level naming the config key and what to check, later
// ones at warn with the next delay — instead of exiting, since a process that exits with status 2
// (a config error) is not restarted by deploy/hermod.service. What is an answer rather than an
// absence (wrong credentials, a refused request) still fails at once.

import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from '../log.ts';

/** Start-up was asked to stop (SIGINT/SIGTERM) while it waited. */
export class StartAborted extends Error {
  constructor() {
    super('start-up stopped while waiting');
    this.name = 'StartAborted';
  }
}

/** First and longest wait between attempts (ms). */
const FIRST_WAIT_MS = 1_000;
const MAX_WAIT_MS = 30_000;

/** What is waited for, for the log. */
export interface Awaited {
  /** e.g. 'application database'. */
  what: string;
  /** The config key that names it, e.g. 'appDb.url'. */
  key: string;
  /** Where (no password), e.g. 'http://127.0.0.1:5984/ajatus_db'. */
  where: string;
}

/** How long one attempt may go unanswered before it counts as "not reachable" (ms). */
const ATTEMPT_TIMEOUT_MS = 20_000;
/** Every this many failed attempts the wait is logged at error level again (a typo'd host waits too). */
const ERROR_EVERY = 10;

/** Thrown when an attempt got no answer within ATTEMPT_TIMEOUT_MS. */
export class NoAnswer extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms / 1000} s`);
    this.name = 'NoAnswer';
  }
}

/**
 * Runs `attempt` until it succeeds or fails with an error `unreachable` does not accept (that
 * error is thrown). An attempt unanswered after 20 s counts as unreachable (NoAnswer; it is left
 * to finish on its own). Waits 1 s, doubling to 30 s, between attempts; the first failure, and
 * every tenth, is logged at error level ("is CouchDB running …?"), the others at warn, and
 * success after a failure at info. Throws StartAborted as soon as `signal` aborts — also while an
 * attempt is under way. (`attemptTimeoutMs`, `firstWaitMs`: for tests.)
 */
export async function untilReachable<T>(awaited: Awaited, attempt: () => Promise<T>, o: { log: Logger; unreachable: (err: unknown) => boolean; signal?: AbortSignal; attemptTimeoutMs?: number; firstWaitMs?: number }): Promise<T> {
  for (let tries = 1, wait = o.firstWaitMs ?? FIRST_WAIT_MS; ; tries++, wait = Math.min(wait * 2, MAX_WAIT_MS)) {
    if (o.signal?.aborted) throw new StartAborted();
    try {
      const result = await bounded(attempt, o.signal, o.attemptTimeoutMs ?? ATTEMPT_TIMEOUT_MS);
      if (tries > 1) o.log.info(`${awaited.what} reachable; starting`, { at: awaited.where, attempts: tries });
      return result;
    } catch (err) {
      if (err instanceof StartAborted || !(err instanceof NoAnswer || o.unreachable(err))) throw err;
      const fields = { key: awaited.key, at: awaited.where, reason: reasonOf(err), attempts: tries, retryInSeconds: wait / 1000 };
      if (tries % ERROR_EVERY === 1) o.log.error(`${awaited.what} not reachable: is CouchDB running at ${awaited.key}? waiting for it`, fields);
      else o.log.warn(`${awaited.what} still not reachable; trying again`, fields);
    }
    await sleep(wait, o.signal);
  }
}

/** `attempt()`, or NoAnswer after `timeoutMs`, or StartAborted when `signal` aborts first. */
function bounded<T>(attempt: () => Promise<T>, signal: AbortSignal | undefined, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => finish(() => reject(new NoAnswer(timeoutMs))), timeoutMs);
    const aborted = (): void => finish(() => reject(new StartAborted()));
    let done = false;
    function finish(settle: () => void): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', aborted);
      settle();
    }
    signal?.addEventListener('abort', aborted, { once: true });
    attempt().then(
      (value) => finish(() => resolve(value)),
      (err: unknown) => finish(() => reject(err)),
    );
  });
}

function reasonOf(err: unknown): string {
  const e = err as { statusCode?: number; message?: string };
  if (typeof e?.statusCode === 'number') return `HTTP ${e.statusCode}`;
  return e?.message ?? String(err);
}

/** Waits `ms` (node:timers/promises), or rejects with StartAborted as soon as `signal` aborts. */
async function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await delay(ms, undefined, signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw new StartAborted();
    throw err;
  }
}
