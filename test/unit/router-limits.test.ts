// The router's bound on requests under way (src/xmpp/router.ts): beyond it, in all or from one
// bare JID, a request is answered at once with resource-constraint (wait), logged once per
// burst; what was accepted is answered as usual; messages are never refused.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse, type Element } from 'ltx';
import { routeKey } from '../../src/xmpp/request.ts';
import { Router, type MessageHandler } from '../../src/xmpp/router.ts';
import { captureLog } from './capture-log.ts';

const SVC = 'pubsub.example.org';
const NS = 'urn:example:slow';

function request(from: string, id: string): Element {
  return parse(`<iq type='get' id='${id}' from='${from}' to='${SVC}'><slow xmlns='${NS}'/></iq>`) as Element;
}

const condition = (reply: Element | undefined): string | undefined => reply?.getChild('error')?.getChildElements()[0]?.name;

describe('requests under way are bounded', () => {
  it('one too many from a bare JID, or in all, gets resource-constraint (wait) at once; the accepted are answered; messages always go through', async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const log = captureLog();
    const messages: string[] = [];
    const router = new Router({
      jid: SVC,
      log,
      maxRequests: 3,
      maxRequestsPerSender: 2,
      routes: new Map([[routeKey('get', NS, 'slow'), async () => void (await gate)]]),
      messages: new Map([['urn:example:event', (stanza: Element) => void messages.push(stanza.attrs.id as string)]]),
    });
    const a1 = router.handle(request('a@example.org/one', 'a1'));
    const a2 = router.handle(request('a@example.org/two', 'a2'));
    const b1 = router.handle(request('b@example.org/x', 'b1')); // another entity gets in
    // A third from the same bare JID (another resource): refused at once, while the others wait.
    const a3 = await router.handle(request('a@example.org/three', 'a3'));
    assert.equal(a3?.attrs.type, 'error');
    assert.equal(a3?.getChild('error')?.attrs.type, 'wait');
    assert.equal(condition(a3), 'resource-constraint');
    assert.equal(a3?.attrs.id, 'a3');
    assert.match(a3?.getChild('error')?.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '', /too many requests under way/);
    assert.equal(condition(await router.handle(request('c@example.org/x', 'c1'))), 'resource-constraint', 'three under way in all');
    await router.handle(parse(`<message id='m1' from='c@example.org/x' to='${SVC}'><event xmlns='urn:example:event'/></message>`) as Element);
    assert.deepEqual(messages, ['m1'], 'a message is handled whatever is under way');
    assert.equal(router.refusedBusyCount, 2);
    assert.equal(log.lines.filter((l) => /refused: too many/.test(l.msg)).length, 1, 'one warning for the burst');

    open();
    for (const reply of await Promise.all([a1, a2, b1])) assert.equal(reply?.attrs.type, 'result');
    // Answered: room again, for the same sender too; the end of the burst is logged with its count.
    assert.equal((await router.handle(request('a@example.org/three', 'a4')))?.attrs.type, 'result');
    assert.deepEqual(
      log.lines.filter((l) => l.msg === 'requests accepted again').map((l) => l.refused),
      [2],
    );
    await router.idle();
  });

  it('a message handler that rejects: the caller gets the rejection, and no other promise rejects unhandled', async () => {
    const unhandled: unknown[] = [];
    const seen = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', seen);
    try {
      const router = new Router({
        jid: SVC,
        log: captureLog(),
        routes: new Map(),
        messages: new Map<string, MessageHandler>([['urn:example:event', () => Promise.reject(new Error('every replication failed'))]]),
      });
      const handled = router.handle(parse(`<message id='m1' from='c@example.org/x' to='${SVC}'><event xmlns='urn:example:event'/></message>`) as Element);
      await assert.rejects(handled, /every replication failed/);
      await new Promise((r) => setTimeout(r, 20));
      await router.idle();
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', seen);
    }
  });
});
