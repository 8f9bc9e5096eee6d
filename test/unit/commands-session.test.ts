// XEP-0050 get-pending sessions (src/xmpp/commands.ts) are signed, not stored: a second step
// checks out on any process that has the secret (a cluster's other member), not with another
// secret or another JID, and not after SESSION_MS (session-expired).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse, type Element } from 'ltx';
import { silentLogger } from '../../src/log.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { commandRoutes, GET_PENDING, SESSION_MS } from '../../src/xmpp/commands.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { Router } from '../../src/xmpp/router.ts';

const SVC = 'pubsub.a.test';
const ALICE = 'alice@a.test/desk';
const command = (extra: string, inner = ''): Element => parse(`<iq type='set' id='c' from='${ALICE}' to='${SVC}'><command xmlns='${NS.COMMANDS}' node='${GET_PENDING}' ${extra}>${inner}</command></iq>`) as Element;
const submit = `<x xmlns='jabber:x:data' type='submit'><field var='pubsub#node'><value>club</value></field></x>`;
const errorOf = (reply: Element | undefined): string[] => (reply?.getChild('error')?.getChildElements() ?? []).filter((c) => c.name !== 'text').map((c) => c.name);

describe('get-pending sessions', () => {
  it('a session opened on one process completes on another with the same secret; another secret, another JID or a lapsed session does not', async () => {
    const service = new PubsubService({ store: new MemoryStore(), notifier: () => undefined, mayCreateNodes: () => true });
    await service.create(ALICE, 'club', { accessModel: 'authorize' });
    let clock = 1_000_000;
    const member = (secret: string): Router => new Router({ jid: SVC, log: silentLogger, routes: commandRoutes(service, secret, () => clock) });
    const [a, b, stranger] = [member('s3cret'), member('s3cret'), member('other')];
    const sessionid = (await a.handle(command("action='execute'")))?.getChild('command', NS.COMMANDS)?.attrs.sessionid as string;
    assert.equal((await b.handle(command(`sessionid='${sessionid}' action='complete'`, submit)))?.getChild('command', NS.COMMANDS)?.attrs.status, 'completed');
    assert.deepEqual(errorOf(await stranger.handle(command(`sessionid='${sessionid}' action='complete'`, submit))), ['bad-request', 'bad-sessionid']);
    const asBob = parse(command(`sessionid='${sessionid}' action='complete'`, submit).toString().replace(ALICE, 'bob@a.test/x')) as Element;
    assert.deepEqual(errorOf(await b.handle(asBob)), ['bad-request', 'bad-sessionid']);
    clock += SESSION_MS + 1;
    assert.deepEqual(errorOf(await b.handle(command(`sessionid='${sessionid}' action='complete'`, submit))), ['not-allowed', 'session-expired']);
  });
});
