// The README's feature table must say exactly what disco#info advertises (the e2e suite checks
// disco#info against PUBSUB_FEATURES on the live service; PRIVILEGED_FEATURES are advertised only
// while the server grants XEP-0356 roster access, checked in pubsub-privilege.test.ts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import { PUBSUB_FEATURES } from '../../src/xmpp/disco.ts';
import { PRIVILEGED_FEATURES } from '../../src/xmpp/privilege.ts';

it('README feature table marks exactly the advertised pub/sub features with ✔', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.split('## Pub/sub features')[1]?.split('\n## ')[0] ?? '';
  const rows = [...section.matchAll(/^\| ([a-z-]+) \| (✔|✗) \|/gm)].map((m) => [m[1] as string, m[2] as string] as const);
  assert.ok(rows.length > 20, 'the table is there');
  const ticked = rows.filter(([, mark]) => mark === '✔').map(([name]) => name).sort();
  assert.deepEqual(ticked, [...PUBSUB_FEATURES, ...PRIVILEGED_FEATURES].sort());
});
