// Packed payloads between Hermods (`{urn:hermod:pubsub:0}packed`, src/xmpp/packed.ts) on the
// in-process wire harness (real Prosody): a partner asks for them when it subscribes, gets its
// notifications packed over the wire and writes exactly the payload that was published (quotes,
// entities, non-ASCII); a notification whose packed payload was damaged on the way is not written
// wrong or dropped: the item is fetched by id (§6.5.8), written, and the damage logged. With
// `packed: false` (`ajatus.packedPayloads`, the way back to a Hermod that cannot read them) a
// subscription an earlier run left packed is turned plain again.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Element } from 'ltx';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { captureLog } from '../unit/capture-log.ts';
import { aroundRequests, managerOn, useSite, withPartner } from './partner-fixture.ts';

const TITLE = `"Hyvää" & 'päivää' <3 💌`;
const entry = (title: string): string => `<entry xmlns='http://www.w3.org/2005/Atom'><title>${title.replaceAll('&', '&amp;').replaceAll('<', '&lt;')}</title><json xmlns='urn:xmpp:json:0'>{"_id":"x","q":"a\\"b"}</json></entry>`;
const publish = (node: string, id: string, title: string): string => `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'>${entry(title)}</item></publish></pubsub>`;

async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (const start = Date.now(); !(await done()); await new Promise((r) => setTimeout(r, 10))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

/** For each item of an event message as it arrived: 'id packed', 'id xml' or 'id none'. */
const arrived = (m: Element): string[] =>
  (m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items')?.getChildren('item') ?? []).map((i) => `${String(i.attrs.id)} ${i.getChildElements().length > 0 ? 'xml' : i.getText().trim() !== '' ? 'packed' : 'none'}`);

describe('packed payloads between Hermods', () => {
  const s = useSite();

  /** A sink that records what it writes to `node` (`id@node title json`; the partner follows the earlier tests' nodes too). */
  function recording(mine: string) {
    const written: string[] = [];
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        if (node !== mine) return true;
        const e = item.getChildElements()[0];
        written.push(`${String(item.attrs.id)}@${node} ${e?.getChildText('title') ?? '(no payload)'} ${e?.getChildText('json') ?? ''}`);
        return true;
      },
      retract: async () => undefined,
    };
    return { written, sink };
  }

  it('a partner asks for packed payloads, gets them packed on the wire, and writes exactly what was published', async () => {
    await s.alice.iq('set', s.site.jid, `<pubsub xmlns='${NS.PUBSUB}'><create node='/tags/p1'/></pubsub>`);
    const { written, sink } = recording('/tags/p1');
    const shapes: string[] = [];
    await withPartner(s.site, 'pubsub.beta.test', sink, { onEvent: (m) => shapes.push(...arrived(m)), digestMs: 25 }, async ({ harness }) => {
      await until(async () => (await s.site.core.service.getSubscriptionOptions(harness.jid, '/tags/p1', harness.jid, undefined).catch(() => undefined))?.options?.packed === true, 'the subscription with packed on');
      await s.alice.iq('set', s.site.jid, publish('/tags/p1', 'x', TITLE));
      await until(() => written.length === 1, 'the write');
      assert.deepEqual(written, [`x@/tags/p1 ${TITLE} {"_id":"x","q":"a\\"b"}`]);
      assert.deepEqual(shapes, ['x packed'], 'packed as it arrived');
    });
  });

  it('a damaged packed payload: the item is fetched by id and written, and the damage logged', async () => {
    await s.alice.iq('set', s.site.jid, `<pubsub xmlns='${NS.PUBSUB}'><create node='/tags/p2'/></pubsub>`);
    const { written, sink } = recording('/tags/p2');
    const fetches: string[] = [];
    const log = captureLog();
    const iq = aroundRequests(async (child, send) => {
      const items = child.getChild('items');
      if (child.name === 'pubsub' && items?.attrs.node === '/tags/p2') for (const i of items.getChildren('item')) fetches.push(String(i.attrs.id));
      return send();
    });
    // The packed text of y's notification damaged on the way.
    const gate = (m: Element, deliver: () => void): void => {
      const item = m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items')?.getChild('item');
      if (item && item.getText().trim() !== '') item.children = [Buffer.from('<entry xmlns="http://www.w3.org/2005/Atom"><title>cut').toString('base64')];
      deliver();
    };
    await withPartner(s.site, 'pubsub.gamma.test', sink, { gate, iq, log }, async ({ harness }) => {
      await until(async () => (await s.site.core.service.getSubscriptionOptions(harness.jid, '/tags/p2', harness.jid, undefined).catch(() => undefined))?.options?.packed === true, 'the subscription with packed on');
      await s.alice.iq('set', s.site.jid, publish('/tags/p2', 'y', 'whole'));
      await until(() => written.length === 1, 'the write of the fetched item');
      assert.deepEqual(written, ['y@/tags/p2 whole {"_id":"x","q":"a\\"b"}']);
      assert.deepEqual(fetches, ['y']);
      assert.ok(log.lines.some((l) => l.level === 'warn' && /packed payload could not be read/.test(l.msg) && l.item === 'y'), 'logged with the item id');
    });
  });

  it('packed payloads turned off: a subscription an earlier run left packed is made plain again, and payloads arrive as XML', async () => {
    await s.alice.iq('set', s.site.jid, `<pubsub xmlns='${NS.PUBSUB}'><create node='/tags/p3'/></pubsub>`);
    const { written, sink } = recording('/tags/p3');
    const shapes: string[] = [];
    /** The packed option of the JID's subscription ('none': no subscription now). */
    const packedNow = async (jid: string): Promise<boolean | 'none'> => {
      const sub = await s.site.core.service.getSubscriptionOptions(jid, '/tags/p3', jid, undefined).catch(() => undefined);
      return sub === undefined ? 'none' : sub.options?.packed === true;
    };
    await withPartner(s.site, 'pubsub.delta.test', sink, { onEvent: (m) => shapes.push(...arrived(m)) }, async ({ harness, manager }) => {
      await until(async () => (await packedNow(harness.jid)) === true, 'the subscription with packed on (the earlier run)');
      await manager.stop();
      assert.equal(await packedNow(harness.jid), true, 'the subscription stays packed after that run stopped');
      // The next run on the same JID, told not to ask for packed payloads.
      const plain = managerOn(s.site, harness, sink, { packed: false });
      try {
        await until(async () => (await packedNow(harness.jid)) === false, 'the subscription made plain again');
        await s.alice.iq('set', s.site.jid, publish('/tags/p3', 'z', TITLE));
        await until(() => written.length === 1, 'the write');
        assert.deepEqual(written, [`z@/tags/p3 ${TITLE} {"_id":"x","q":"a\\"b"}`]);
        // (Other nodes' last items, sent when this run subscribed to them, arrive here too.)
        assert.deepEqual(shapes.filter((x) => x.startsWith('z ')), ['z xml'], `plain as it arrived: ${shapes.join(', ')}`);
      } finally {
        await plain.stop();
      }
    });
  });

  it('packed payloads turned off: a configure that does not take is asked again, packed alone, by the next discovery', async () => {
    await s.alice.iq('set', s.site.jid, `<pubsub xmlns='${NS.PUBSUB}'><create node='/tags/p4'/></pubsub>`);
    const { sink } = recording('/tags/p4');
    const packedNow = async (jid: string): Promise<boolean | 'none'> => {
      const sub = await s.site.core.service.getSubscriptionOptions(jid, '/tags/p4', jid, undefined).catch(() => undefined);
      return sub === undefined ? 'none' : sub.options?.packed === true;
    };
    const log = captureLog();
    await withPartner(s.site, 'pubsub.epsilon.test', sink, {}, async ({ harness, manager }) => {
      await until(async () => (await packedNow(harness.jid)) === true, 'the subscription with packed on (the earlier run)');
      await manager.stop();
      let refused = 0;
      const submitted: string[][] = [];
      // The first configure for /tags/p4 (digests and packed, after subscribing) gets no good answer.
      const iq = aroundRequests(async (child, send) => {
        const options = child.getChild('options');
        const x = options?.getChild('x');
        if (options?.attrs.node === '/tags/p4' && x?.attrs.type === 'submit') {
          submitted.push(x.getChildren('field').map((f) => String(f.attrs.var)).filter((v) => v !== 'FORM_TYPE'));
          if (refused++ === 0) throw new Error('remote-server-timeout');
        }
        return send();
      });
      const plain = managerOn(s.site, harness, sink, { packed: false, iq, log });
      try {
        await until(() => plain.subscriptions().includes(`${s.site.jid} /tags/p4`) && refused >= 1, 'followed, its configuring refused');
        plain.discoverSoon();
        await until(async () => (await packedNow(harness.jid)) === false, 'packed off, asked for again');
        assert.ok(submitted[0]?.includes('{urn:hermod:pubsub:0}packed'), `the refused configure asked for it: ${JSON.stringify(submitted)}`);
        assert.deepEqual(submitted.at(-1), ['{urn:hermod:pubsub:0}packed'], 'asked again alone');
        assert.ok(log.lines.some((l) => l.level === 'info' && /packed payloads turned off/.test(l.msg) && l.node === '/tags/p4'), 'the turn logged');
      } finally {
        await plain.stop();
      }
    });
  });
});
