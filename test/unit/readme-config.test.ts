// The config schema is the one source of the config keys: the README's two key tables ("Running
// Hermod" and "Midgard replication") and `hermod --help` must list exactly its described keys,
// with the same meaning and default, so the schema, the help text and the README cannot drift.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { help } from '../../src/cli/main.ts';
import { configKeys } from '../../src/config/config.ts';
import type { KeyDoc } from '../../src/config/schema-kit.ts';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const keys = configKeys();

/** The rows of the first key table under the `## heading` section. */
function table(heading: string): string[] {
  const section = readme.split(`\n${heading}\n`)[1]?.split('\n## ')[0] ?? '';
  const body = section.split('\n| key | meaning | default |\n|---|---|---|\n')[1] ?? '';
  return body.split('\n').filter((line, i, lines) => line.startsWith('|') && lines.slice(0, i).every((l) => l.startsWith('|')));
}

const row = (k: KeyDoc): string => `| \`${k.key}\` | ${k.meaning.replaceAll('|', '\\|')} | ${k.default} |`;
const keyOf = (line: string): string => /^\| `([^`]+)` \|/.exec(line)?.[1] ?? line;

describe('README config tables match the config schema', () => {
  for (const [heading, own] of [
    ['## Running Hermod', (k: KeyDoc) => !k.key.startsWith('midgard.')],
    ['## Midgard replication', (k: KeyDoc) => k.key.startsWith('midgard.')],
  ] as const) {
    it(`${heading}: one row per described key, with its meaning and default`, () => {
      const rows = table(heading);
      const expected = keys.filter(own);
      assert.ok(expected.length > 10, 'the schema describes its keys');
      assert.deepEqual(rows.map(keyOf), expected.map((k) => k.key), 'the same keys, in schema order');
      assert.deepEqual(rows, expected.map(row), `the table should read:\n${expected.map(row).join('\n')}`);
    });
  }

  it('hermod --help lists every described key with its default', () => {
    const text = help();
    for (const k of keys) assert.ok(text.includes(`\n  ${k.key} = ${k.default.replaceAll('`', '')}\n`), k.key);
  });
});
