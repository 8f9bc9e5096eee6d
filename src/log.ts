// Structured logging: one JSON line per event (pino), with levels. Modules take the small
// Logger interface, so tests and embedders can pass their own. Secrets are never passed to it
// (config values are redacted by key as a second guard).

import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(bindings: Record<string, unknown>): Logger;
}

const REDACT = ['secret', 'password', '*.secret', '*.password', 'config.component.secret'];

function wrap(p: PinoLogger): Logger {
  return {
    debug: (msg, fields) => p.debug(fields ?? {}, msg),
    info: (msg, fields) => p.info(fields ?? {}, msg),
    warn: (msg, fields) => p.warn(fields ?? {}, msg),
    error: (msg, fields) => p.error(fields ?? {}, msg),
    child: (bindings) => wrap(p.child(bindings)),
  };
}

/** A logger writing JSON lines to stderr (stdout stays free for command output). */
export function createLogger(level: LogLevel = 'info', destination: NodeJS.WritableStream = process.stderr): Logger {
  return wrap(pino({ level, base: { name: 'hermod' }, redact: { paths: REDACT, censor: '[redacted]' } }, destination as DestinationStream));
}

export const silentLogger: Logger = createLogger('silent');
