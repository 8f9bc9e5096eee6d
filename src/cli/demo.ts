// `hermod demo`: the main job on embedded defaults, for a newcomer. Starts Prosody (alpha.test)
// and ejabberd (beta.test) federating on loopback, attaches Hermod to Prosody, and shows a
// publish on one server reaching a subscriber on the other. Stops everything at the end.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { client } from '@xmpp/client';
import { Element, parse } from 'ltx';
import { startXmppEnv, type ServerInfo, type XmppEnv } from '../devenv/servers.ts';
import { startHermod, type Hermod } from '../hermod.ts';
import { createLogger } from '../log.ts';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const EVENT = 'http://jabber.org/protocol/pubsub#event';
const say = (line: string): void => void process.stdout.write(`${line}\n`);

type Xmpp = ReturnType<typeof client>;

async function login(server: ServerInfo, user: string): Promise<Xmpp> {
  const xmpp = client({ service: server.c2s, domain: server.domain, username: user, password: 'demo-password', resource: 'demo' });
  xmpp.on('error', () => {});
  xmpp.reconnect.stop();
  await xmpp.start();
  await xmpp.send(parse('<presence/>') as never);
  return xmpp;
}

async function iq(xmpp: Xmpp, to: string, type: 'get' | 'set', child: string): Promise<Element> {
  const request = new Element('iq', { type, to }).cnode(parse(child)).up();
  return (await xmpp.iqCaller.request(request as never, 10_000)) as unknown as Element;
}

export async function runDemo(): Promise<number> {
  let env: XmppEnv | undefined;
  let hermod: Hermod | undefined;
  const clients: Xmpp[] = [];
  const dataDir = await mkdtemp(path.join(tmpdir(), 'hermod-demo-'));
  try {
    say('Starting Prosody (alpha.test) and ejabberd (beta.test), federating over s2s on loopback…');
    env = await startXmppEnv();
    const alpha = env.alpha as ServerInfo;
    const beta = env.beta as ServerInfo;
    say(`  Prosody  alpha.test on ${alpha.ip}   ejabberd beta.test on ${beta.ip}`);

    say(`Starting Hermod as component ${alpha.componentJid} (embedded store in ${dataDir})…`);
    hermod = await startHermod(
      {
        component: { jid: alpha.componentJid, secret: alpha.componentSecret, server: alpha.componentService },
        dataDir,
        pubsub: { admins: [], creatorDomains: [alpha.domain], name: 'Hermod demo' },
        store: { sync: false },
        log: { level: 'warn' },
      },
      { log: createLogger('warn') },
    );
    await hermod.online;
    const svc = alpha.componentJid;

    await env.register(alpha, 'alice', 'demo-password');
    await env.register(beta, 'bob', 'demo-password');
    const alice = await login(alpha, 'alice');
    const bob = await login(beta, 'bob');
    clients.push(alice, bob);
    say('alice@alpha.test and bob@beta.test are online.');

    const received: Element[] = [];
    let wake: (() => void) | undefined;
    bob.on('stanza', (stanza: Element) => {
      const items = stanza.is('message') ? stanza.getChild('event', EVENT)?.getChild('items') : undefined;
      const item = items?.getChild('item');
      if (!item) return;
      received.push(item);
      say(`  bob@beta.test  <- notification over s2s: node '${items?.attrs.node}', item '${item.attrs.id}': "${item.getChild('entry')?.getChildText('title')}"`);
      wake?.();
    });

    await iq(alice, svc, 'set', `<pubsub xmlns='${PUBSUB}'><create node='/tags/demo'/></pubsub>`);
    say(`alice creates node '/tags/demo' on ${svc}.`);
    const sub = await iq(bob, svc, 'set', `<pubsub xmlns='${PUBSUB}'><subscribe node='/tags/demo' jid='bob@beta.test/demo'/></pubsub>`);
    say(`bob subscribes from the other server: ${sub.getChild('pubsub')?.getChild('subscription')?.attrs.subscription}.`);

    const titles = ['Hermod says hello', 'Replication over XMPP', 'Nothing lost'];
    for (const [i, title] of titles.entries()) {
      const entry = `<entry xmlns='http://www.w3.org/2005/Atom'><id>urn:demo:${i + 1}</id><title>${title}</title><updated>${new Date().toISOString()}</updated></entry>`;
      say(`  alice@alpha.test -> publishes item 'doc-${i + 1}'`);
      await iq(alice, svc, 'set', `<pubsub xmlns='${PUBSUB}'><publish node='/tags/demo'><item id='doc-${i + 1}'>${entry}</item></publish></pubsub>`);
    }
    const deadline = Date.now() + 15_000;
    while (received.length < titles.length && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 250);
      });
    }
    const items = await iq(bob, svc, 'get', `<pubsub xmlns='${PUBSUB}'><items node='/tags/demo'/></pubsub>`);
    const stored = items.getChild('pubsub')?.getChild('items')?.getChildren('item').map((i) => i.attrs.id as string) ?? [];
    say(`bob reads the node's items back: ${stored.join(', ')}`);
    const ok = received.length === titles.length && stored.length === titles.length;
    say(ok ? '\nDemo OK: every publish on alpha.test reached bob@beta.test over federation.' : `\nDemo FAILED: ${received.length}/${titles.length} notifications arrived.`);
    return ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    for (const c of clients) await c.stop().catch(() => {});
    await hermod?.stop().catch(() => {});
    await env?.stop();
    await rm(dataDir, { recursive: true, force: true });
    say('Stopped Hermod, Prosody and ejabberd; removed temp data.');
  }
}
