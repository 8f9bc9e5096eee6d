// The dev environment really federates: Prosody (alpha.test) and ejabberd (beta.test) exchange
// chat messages over s2s in both directions, and a restarted server takes clients again. When its
// ports are taken it refuses before starting anything, naming the process that holds them.
// Needs root and the Debian prosody/ejabberd packages (see src/devenv/index.ts).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { client, xml, type Client, type Element } from '@xmpp/client';
import { PORTS, PortsBusyError, startXmppEnv, type ServerInfo, type XmppEnv } from '../src/devenv/index.ts';

const PW = 'secret-pw';
const WAIT_MS = 10_000;

let env: XmppEnv | undefined;
const clients = new Set<Client>();

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

interface Session {
  xmpp: Client;
  jid: string;
  nextMessage(body: string): Promise<Element>;
}

async function connect(server: ServerInfo, user: string): Promise<Session> {
  const xmpp = client({ service: server.c2s, domain: server.domain, username: user, password: PW, resource: 'test' });
  clients.add(xmpp);
  xmpp.on('error', () => {}); // failures surface through start() / the waits below
  const inbox: Element[] = [];
  const waiters: (() => void)[] = [];
  xmpp.on('stanza', (el) => {
    inbox.push(el);
    for (const w of waiters.splice(0)) w();
  });
  const jid = await withTimeout(xmpp.start(), WAIT_MS, `${user}@${server.domain} connects to ${server.c2s}`);
  await xmpp.send(xml('presence')); // available: messages to the bare JID get delivered
  return {
    xmpp,
    jid: jid.toString(),
    nextMessage(body) {
      const find = () => inbox.find((el) => el.is('message') && el.getChildText('body') === body);
      return withTimeout(
        new Promise<Element>((resolve) => {
          const check = () => {
            const el = find();
            if (el) resolve(el);
            else waiters.push(check);
          };
          check();
        }),
        WAIT_MS,
        `${user}@${server.domain} receives "${body}"`,
      );
    },
  };
}

async function disconnect(s: Session): Promise<void> {
  clients.delete(s.xmpp);
  await s.xmpp.stop().catch(() => {});
}

async function exchange(from: Session, to: Session, toBare: string): Promise<void> {
  const body = `hello ${toBare} from ${from.jid} ${Date.now()}`;
  const got = to.nextMessage(body);
  await from.xmpp.send(xml('message', { to: toBare, type: 'chat' }, xml('body', {}, body)));
  const el = await got;
  assert.equal(el.attrs.from?.split('/')[0], from.jid.split('/')[0]);
}

before(async () => {
  const t0 = Date.now();
  env = await startXmppEnv({ log: (m) => console.log(`# devenv: ${m}`) });
  console.log(`# devenv: started in ${Date.now() - t0} ms`);
  await Promise.all([env.register(env.alpha!, 'alice', PW), env.register(env.beta!, 'bob', PW)]);
});

after(async () => {
  await Promise.all([...clients].map((c) => c.stop().catch(() => {})));
  const t0 = Date.now();
  await env?.stop();
  console.log(`# devenv: stopped in ${Date.now() - t0} ms`);
});

test('chat messages cross s2s between Prosody and ejabberd in both directions', async () => {
  const { alpha, beta } = env!;
  assert.ok(alpha && beta);
  assert.equal(alpha.componentJid, 'pubsub.alpha.test');
  assert.equal(beta.componentJid, 'pubsub.beta.test');
  assert.ok(alpha.pid() && beta.pid());
  const [alice, bob] = await Promise.all([connect(alpha, 'alice'), connect(beta, 'bob')]);
  try {
    await exchange(alice, bob, 'bob@beta.test');
    await exchange(bob, alice, 'alice@alpha.test');
  } finally {
    await Promise.all([disconnect(alice), disconnect(bob)]);
  }
});

test('restart(alpha) keeps data and accepts clients again; s2s recovers', async () => {
  const { alpha, beta } = env!;
  const before = alpha!.pid();
  const t0 = Date.now();
  await env!.restart(alpha!);
  console.log(`# devenv: restart(alpha) took ${Date.now() - t0} ms`);
  assert.notEqual(alpha!.pid(), before);
  const [alice, bob] = await Promise.all([connect(alpha!, 'alice'), connect(beta!, 'bob')]);
  try {
    await exchange(bob, alice, 'alice@alpha.test');
    await exchange(alice, bob, 'bob@beta.test');
  } finally {
    await Promise.all([disconnect(alice), disconnect(bob)]);
  }
});

test('restart(beta) works too', async () => {
  const { beta } = env!;
  await env!.restart(beta!);
  const bob = await connect(beta!, 'bob');
  await disconnect(bob);
});

test('a taken port: PortsBusyError naming the process that holds it, before anything starts', async () => {
  // 127.255.x: the devenv's own addresses (derived from PIDs) never use 255 as second octet.
  const base = `127.255.${process.pid % 256}`;
  const squatter = createServer().listen(PORTS.c2s, `${base}.2`);
  await once(squatter, 'listening');
  try {
    await assert.rejects(startXmppEnv({ ipBase: base, ejabberd: false }), (err: unknown) => {
      assert.ok(err instanceof PortsBusyError, String(err));
      const ip = `${base}.2`.replace(/\./g, '\\.');
      assert.match(err.message, new RegExp(`^cannot start Prosody \\(alpha\\.test\\) on ${ip}: ports already in use: ${PORTS.c2s} by node \\(pid ${process.pid}\\) listening on ${ip}; another Hermod demo, test or benchmark`));
      return true;
    });
  } finally {
    squatter.close();
  }
});

test("Prosody runs with the collector prosody/hermod.cfg.lua recommends; a gc setting it cannot take stops the start, naming HERMOD_PROSODY_GC", async () => {
  const config = await fsp.readFile(path.join(env!.dir, 'prosody', 'prosody.cfg.lua'), 'utf8');
  const snippet = await fsp.readFile(path.join(import.meta.dirname, '..', 'prosody', 'hermod.cfg.lua'), 'utf8');
  const recommended = /^--\s+(gc = \{ mode = "generational" \})$/m.exec(snippet)?.[1];
  assert.ok(recommended, 'the snippet recommends a gc setting');
  assert.ok(config.split('\n').includes(recommended), 'the devenv Prosody runs with it');
  assert.doesNotMatch(await fsp.readFile(path.join(env!.dir, 'prosody', 'prosody.log'), 'utf8'), /Failed to apply GC configuration/);

  const base = `127.255.${(process.pid + 1) % 256}`;
  const saved = process.env.HERMOD_PROSODY_GC;
  process.env.HERMOD_PROSODY_GC = '{ mode = "bogus" }';
  try {
    await assert.rejects(startXmppEnv({ ipBase: base, ejabberd: false }), /prosody did not take its gc setting \(GC mode not supported on Lua 5\.4: bogus\); check HERMOD_PROSODY_GC/);
  } finally {
    if (saved === undefined) delete process.env.HERMOD_PROSODY_GC;
    else process.env.HERMOD_PROSODY_GC = saved;
  }
});
