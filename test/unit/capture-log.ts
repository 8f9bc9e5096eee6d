// A Logger for tests that keeps every line it is told (fields flattened beside level and msg).

import type { Logger } from '../../src/log.ts';

export type Line = { level: string; msg: string } & Record<string, unknown>;

/** A Logger that keeps what it is told in `lines`; its children write there too. */
export function captureLog(): Logger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ ...fields, level, msg });
  const log = { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log };
  return log;
}
