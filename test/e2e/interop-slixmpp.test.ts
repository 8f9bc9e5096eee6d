// Interop: a plain slixmpp client (not written for Hermod) on ejabberd discovers Hermod attached
// to Prosody, subscribes over s2s, receives notifications and reads the items back.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SERVICE_FEATURES } from '../../src/xmpp/disco.ts';
import { PASSWORD, PUBSUB, withTimeout, type TestClient } from './client.ts';
import { useSite } from './fixtures.ts';

const SCRIPT = fileURLToPath(new URL('./clients/slixmpp_subscriber.py', import.meta.url));
let alice: TestClient;
const site = useSite({ name: 'slixmpp' }, async (s) => {
  await s.hermod({ server: s.alpha });
  alice = await s.user(s.alpha, 'alice');
});

it('a slixmpp client on the other server discovers, subscribes, is notified and reads items', { timeout: 90_000 }, async () => {
  const env = site.env;
  const alpha = site.alpha;
  const beta = site.beta;
  const svc = alpha.componentJid;
  await alice.iq('set', svc, `<pubsub xmlns='${PUBSUB}'><create node='/tags/interop'/></pubsub>`);
  await env.register(beta, 'sam', PASSWORD);

  const child = spawn('/usr/bin/python3', [SCRIPT, `sam@${beta.domain}/slix`, PASSWORD, beta.ip, '5222', svc, '/tags/interop', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('READY')) resolve();
    }),
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    await withTimeout(Promise.race([ready, exited.then(() => Promise.reject(new Error(`slixmpp exited early:\n${stdout}\n${stderr}`)))]), 30_000, 'slixmpp subscribed');
    for (const [id, title] of [['one', 'First'], ['two', 'Second']]) {
      await alice.iq('set', svc, `<pubsub xmlns='${PUBSUB}'><publish node='/tags/interop'><item id='${id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>${title}</title></entry></item></publish></pubsub>`);
    }
    const code = await withTimeout(exited, 40_000, 'slixmpp to finish');
    const result = JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
      identities: string[][];
      features: string[];
      nodes: string[];
      subscription: string;
      notified: Array<{ node: string; id: string; title: string; from: string }>;
      items: string[];
    };
    assert.equal(code, 0, `slixmpp failed: ${stdout}\n${stderr}`);
    assert.deepEqual(result.identities, [['pubsub', 'service']]);
    assert.deepEqual(result.features, [...SERVICE_FEATURES].sort());
    assert.ok(result.nodes.includes('/tags/interop'));
    assert.equal(result.subscription, 'subscribed');
    assert.deepEqual(result.notified.map((n) => [n.node, n.id, n.title, n.from]), [
      ['/tags/interop', 'one', 'First', svc],
      ['/tags/interop', 'two', 'Second', svc],
    ]);
    assert.deepEqual(result.items, ['one', 'two']);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
