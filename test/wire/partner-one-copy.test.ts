// One copy of an item published to several followed nodes (src/pubsub/one-copy.ts at the
// service, src/replication/payloads-seen.ts at the partner), on the in-process wire harness: a
// partner following two nodes of a site asks for `{urn:hermod:pubsub:0}one_copy` where its
// nodes are written alike, gets an item published to both with its payload once and through the
// other node without payload, writes it once and moves both nodes' positions; a notification
// without payload that arrives before its payload waits for it, one whose payload never comes is
// fetched; a node with a stylesheet of its own keeps every payload; and an item of a node that
// delivers no payloads at all is fetched and written.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Element, parse } from 'ltx';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import { unpackPayloads } from '../../src/xmpp/packed.ts';
import { ONE_COPY_FIELD } from '../../src/xmpp/subscribe-options-form.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';
import { aroundRequests, memoryPositions, startPartner } from './partner-fixture.ts';

const create = (node: string, config = ''): string => `<pubsub xmlns='${NS.PUBSUB}'><create node='${node}'/>${config}</pubsub>`;
const entry = (text: string): string => `<entry xmlns='http://www.w3.org/2005/Atom'><title>${text}</title></entry>`;
const publish = (node: string, id: string, text: string): string => `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'>${entry(text)}</item></publish></pubsub>`;
const noPayloads = `<configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NS.PUBSUB_NODE_CONFIG}</value></field><field var='pubsub#deliver_payloads'><value>0</value></field></x></configure>`;

/** Waits (polling) until `done` holds; fails after 10 s. */
async function until(done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (const start = Date.now(); !(await done()); await new Promise((r) => setTimeout(r, 10))) if (Date.now() - start > 10_000) throw new Error(`timed out waiting for ${what}`);
}

/** The item elements of an event message, and whether each carries a payload. */
const itemsOf = (m: Element): Array<{ node: string; id: string; payload: boolean }> => {
  const items = m.getChild('event', NS.PUBSUB_EVENT)?.getChild('items');
  // A packed payload (src/xmpp/packed.ts, which partners ask for) is the item's text until the manager unpacks it.
  return (items?.getChildren('item') ?? []).map((i) => ({ node: String(items?.attrs.node), id: String(i.attrs.id), payload: i.getChildElements().length > 0 || i.getText().trim() !== '' }));
};

/** The stanza as text with packed payloads ({urn:hermod:pubsub:0}packed, which partners ask for) decoded: what a gate matches payload text in. */
const plainText = (stanza: Element): string => {
  const copy = parse(stanza.toString()) as Element;
  unpackPayloads(copy);
  return copy.toString();
};

/** Whether the subscription of `jid` to `node` at `site`'s service has one_copy on. */
const oneCopyAt = async (site: WireHarness, jid: string, node: string): Promise<boolean> =>
  (await site.core.service.getSubscriptionOptions(jid, node, jid, undefined).catch(() => undefined))?.options?.oneCopy === true;

describe('one copy of an item published to several followed nodes', () => {
  let site: WireHarness;
  let alice: TestClient;
  const stops: Array<() => Promise<unknown>> = [];

  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    for (const stop of stops.reverse()) await stop();
    await site?.stop();
  });

  /**
   * A partner following the site (every node: earlier tests' too, so only `mine` are recorded):
   * what its sink wrote (`+id@node <title>`), the event messages it got, its item fetches
   * (`node id`), its saved positions.
   */
  async function follower(jid: string, mine: RegExp, options: Parameters<typeof startPartner>[3] = {}) {
    const written: string[] = [];
    const retracted: string[] = [];
    const order: string[] = [];
    const messages: Element[] = [];
    const fetches: string[] = [];
    const { saved, positions } = memoryPositions();
    const sink: PartnerSink = {
      writeItem: async (_service, node, item) => {
        if (mine.test(node)) written.push(`+${String(item.attrs.id)}@${node} ${item.getChildElements()[0]?.getChildText('title') ?? '(no payload)'}`);
        if (mine.test(node)) order.push(`+${String(item.attrs.id)}@${node}`);
        return true;
      },
      retract: async (_service, node, id) => {
        if (mine.test(node)) retracted.push(`-${id}@${node}`), order.push(`-${id}@${node}`);
      },
    };
    const iq = aroundRequests(async (child, send) => {
      const items = child.getChild('items');
      if (child.name === 'pubsub' && items && mine.test(String(items.attrs.node))) for (const i of items.getChildren('item')) fetches.push(`${String(items.attrs.node)} ${String(i.attrs.id)}`);
      return send();
    });
    const { harness, manager } = await startPartner(site, jid, sink, { onEvent: (m) => void (itemsOf(m).some((i) => mine.test(i.node)) && messages.push(m)), iq, positions, ...options });
    stops.push(() => manager.stop(), () => harness.stop());
    const oneCopyOn = (node: string): Promise<boolean> => oneCopyAt(site, harness.jid, node);
    return { harness, manager, written, retracted, order, messages, fetches, saved, oneCopyOn };
  }

  it('asks for one copy, gets the payload once and the other notification without it, writes once, and moves both positions', async () => {
    for (const node of ['/tags/a1', '/tags/b1']) await alice.iq('set', site.jid, create(node));
    const f = await follower('pubsub.beta.test', /^\/tags\/[ab]1$/, { oneCopy: () => true });
    await until(async () => (await f.oneCopyOn('/tags/a1')) && (await f.oneCopyOn('/tags/b1')), 'both subscriptions with one_copy on');

    await alice.iq('set', site.jid, publish('/tags/a1', 'x', 'both'));
    await alice.iq('set', site.jid, publish('/tags/b1', 'x', 'both'));
    await until(() => f.messages.flatMap(itemsOf).length === 2, 'both notifications');
    assert.deepEqual(f.messages.flatMap(itemsOf), [
      { node: '/tags/a1', id: 'x', payload: true },
      { node: '/tags/b1', id: 'x', payload: false },
    ]);
    const sids = f.messages.map((m) => m.getChild('stanza-id', NS.SID)?.attrs.id as string);
    await until(() => f.saved.get(`${site.jid} /tags/b1`) === sids[1], 'the position of the node whose notification had no payload');
    assert.equal(f.saved.get(`${site.jid} /tags/a1`), sids[0]);
    assert.deepEqual(f.written, ['+x@/tags/a1 both'], 'written once');
    assert.deepEqual(f.fetches, [], 'nothing fetched');
  });

  it('a notification without payload that arrives first waits for the payload through the other node', async () => {
    for (const node of ['/tags/a2', '/tags/b2']) await alice.iq('set', site.jid, create(node));
    let held: (() => void) | undefined;
    const gate = (stanza: Element, deliver: () => void): void => {
      if (itemsOf(stanza).some((i) => i.node === '/tags/a2' && i.payload)) held = deliver; // the payload comes late
      else deliver();
    };
    const f = await follower('pubsub.gamma.test', /^\/tags\/[ab]2$/, { oneCopy: () => true, gate });
    await until(async () => (await f.oneCopyOn('/tags/a2')) && (await f.oneCopyOn('/tags/b2')), 'both subscriptions with one_copy on');
    await alice.iq('set', site.jid, publish('/tags/a2', 'y', 'late'));
    await alice.iq('set', site.jid, publish('/tags/b2', 'y', 'late'));
    await until(() => held !== undefined && f.messages.flatMap(itemsOf).length === 2, 'the notification without payload handed over, the other held');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(f.written, [], 'nothing written before the payload');
    held?.();
    await until(() => f.written.length === 1, 'the write');
    assert.deepEqual(f.written, ['+y@/tags/a2 late']);
    assert.deepEqual(f.fetches, [], 'nothing fetched');
  });

  it('a payload that never comes through the other node is fetched', async () => {
    for (const node of ['/tags/a3', '/tags/b3']) await alice.iq('set', site.jid, create(node));
    const gate = (stanza: Element, deliver: () => void): void => {
      if (!itemsOf(stanza).some((i) => i.node === '/tags/a3' && i.id === 'z')) deliver(); // lost on the way
    };
    const f = await follower('pubsub.delta.test', /^\/tags\/[ab]3$/, { oneCopy: () => true, gate, payloadWaitMs: 200 });
    await until(async () => (await f.oneCopyOn('/tags/a3')) && (await f.oneCopyOn('/tags/b3')), 'both subscriptions with one_copy on');
    await alice.iq('set', site.jid, publish('/tags/a3', 'z', 'fetched'));
    await alice.iq('set', site.jid, publish('/tags/b3', 'z', 'fetched'));
    await until(() => f.written.length === 1, 'the write of the fetched item');
    assert.deepEqual(f.written, ['+z@/tags/b3 fetched']);
    assert.deepEqual(f.fetches, ['/tags/b3 z']);
  });

  it("an older version's payload does not stand for a newer one whose payload was lost: that one is fetched", async () => {
    for (const node of ['/tags/a6', '/tags/b6']) await alice.iq('set', site.jid, create(node));
    const gate = (stanza: Element, deliver: () => void): void => {
      if (!itemsOf(stanza).some((i) => i.node === '/tags/a6' && i.payload && plainText(stanza).includes('v2'))) deliver(); // v2 through /tags/a6 lost
    };
    const f = await follower('pubsub.eta.test', /^\/tags\/[ab]6$/, { oneCopy: () => true, gate, payloadWaitMs: 200 });
    await until(async () => (await f.oneCopyOn('/tags/a6')) && (await f.oneCopyOn('/tags/b6')), 'both subscriptions with one_copy on');
    for (const version of ['v1', 'v2']) for (const node of ['/tags/a6', '/tags/b6']) await alice.iq('set', site.jid, publish(node, 'u', version));
    await until(() => f.written.length === 2, 'v1 written, v2 fetched');
    assert.deepEqual(f.written, ['+u@/tags/a6 v1', '+u@/tags/b6 v2']);
    assert.deepEqual(f.fetches, ['/tags/b6 u']);
  });

  it('a retraction on the node of a notification without payload waits for that payload', async () => {
    for (const node of ['/tags/a7', '/tags/b7']) await alice.iq('set', site.jid, create(node));
    let held: (() => void) | undefined;
    const gate = (stanza: Element, deliver: () => void): void => {
      if (itemsOf(stanza).some((i) => i.node === '/tags/a7' && i.payload)) held = deliver;
      else deliver();
    };
    const f = await follower('pubsub.theta.test', /^\/tags\/[ab]7$/, { oneCopy: () => true, gate });
    await until(async () => (await f.oneCopyOn('/tags/a7')) && (await f.oneCopyOn('/tags/b7')), 'both subscriptions with one_copy on');
    await alice.iq('set', site.jid, publish('/tags/a7', 't', 'first'));
    await alice.iq('set', site.jid, publish('/tags/b7', 't', 'first'));
    await alice.iq('set', site.jid, `<pubsub xmlns='${NS.PUBSUB}'><retract node='/tags/b7' notify='1'><item id='t'/></retract></pubsub>`);
    await until(() => held !== undefined && f.messages.length === 2, 'the payload held, the notification without it handed over');
    await new Promise((r) => setTimeout(r, 200)); // the retraction's notification handed over meanwhile
    assert.deepEqual(f.retracted, [], 'the retraction waits');
    held?.();
    await until(() => f.retracted.length === 1, 'the retraction');
    assert.deepEqual(f.order, ['+t@/tags/a7', '-t@/tags/b7']);
  });

  it('a node with a stylesheet of its own keeps every payload (one_copy off there)', async () => {
    for (const node of ['/tags/a4', '/tags/b4']) await alice.iq('set', site.jid, create(node));
    const f = await follower('pubsub.epsilon.test', /^\/tags\/[ab]4$/, { oneCopy: (_partner, node) => node !== '/tags/b4' });
    await until(() => f.manager.subscriptions().filter((s) => / \/tags\/[ab]4$/.test(s)).length === 2, 'both subscriptions');
    await until(() => f.oneCopyOn('/tags/a4'), 'one_copy on where the node is written alike');
    assert.equal(await f.oneCopyOn('/tags/b4'), false);
    await alice.iq('set', site.jid, publish('/tags/a4', 'w', 'twice'));
    await alice.iq('set', site.jid, publish('/tags/b4', 'w', 'twice'));
    // (A catch-up that read the node while the item was published may write it once more.)
    await until(() => new Set(f.written).size === 2, 'both writes');
    assert.deepEqual([...new Set(f.written)].sort(), ['+w@/tags/a4 twice', '+w@/tags/b4 twice']);
    assert.ok(f.messages.flatMap(itemsOf).every((i) => i.payload), 'every notification with its payload');
  });

  it('a stylesheet added to a followed node turns one copy off there at the next discovery; meanwhile its notifications without payload are fetched', async () => {
    for (const node of ['/tags/a8', '/tags/b8']) await alice.iq('set', site.jid, create(node));
    const styled = new Set<string>();
    const f = await follower('pubsub.iota.test', /^\/tags\/[ab]8$/, { oneCopy: (_partner, node) => !styled.has(node) });
    await until(async () => (await f.oneCopyOn('/tags/a8')) && (await f.oneCopyOn('/tags/b8')), 'both subscriptions with one_copy on');
    styled.add('/tags/b8');
    await alice.iq('set', site.jid, publish('/tags/a8', 's', 'styled'));
    await alice.iq('set', site.jid, publish('/tags/b8', 's', 'styled'));
    await until(() => new Set(f.written).size === 2, 'both writes');
    assert.deepEqual([...new Set(f.written)].sort(), ['+s@/tags/a8 styled', '+s@/tags/b8 styled'], 'the stylesheet node got the document too');
    assert.deepEqual(f.fetches, ['/tags/b8 s'], 'fetched, not waited for');
    f.manager.discoverSoon();
    await until(async () => !(await f.oneCopyOn('/tags/b8')), 'one_copy off for the stylesheet node');
    assert.equal(await f.oneCopyOn('/tags/a8'), true);
  });

  it("a payload written through a stylesheet added since does not stand for another node's notification without payload", async () => {
    for (const node of ['/tags/a9', '/tags/b9']) await alice.iq('set', site.jid, create(node));
    const styled = new Set<string>();
    const f = await follower('pubsub.kappa.test', /^\/tags\/[ab]9$/, { oneCopy: (_partner, node) => !styled.has(node) });
    await until(async () => (await f.oneCopyOn('/tags/a9')) && (await f.oneCopyOn('/tags/b9')), 'both subscriptions with one_copy on');
    styled.add('/tags/a9'); // the payload's node now has a stylesheet of its own
    await alice.iq('set', site.jid, publish('/tags/a9', 'r', 'styled'));
    await alice.iq('set', site.jid, publish('/tags/b9', 'r', 'styled'));
    await until(() => new Set(f.written).size === 2, 'both writes');
    assert.deepEqual(f.fetches, ['/tags/b9 r'], 'the plain node fetched its copy');
  });

  /** A site of its own (the partner's discovery follows only these nodes), registered to stop. */
  async function ownSite(jid: string, nodes: string[]): Promise<{ own: WireHarness; owner: TestClient }> {
    const own = await WireHarness.start({ jid });
    stops.push(() => own.stop());
    const owner = own.client(`alice@${jid.slice(jid.indexOf('.') + 1)}/desk`);
    for (const node of nodes) await owner.iq('set', own.jid, create(node));
    return { own, owner };
  }

  it("a removed partner's notifications still on their way are not written", async () => {
    const { own, owner } = await ownSite('pubsub.nu.test', ['/tags/a10', '/tags/b10']);
    const written: string[] = [];
    let got = 0;
    const sink: PartnerSink = { writeItem: async (_s, node, item) => (written.push(`+${String(item.attrs.id)}@${node}`), true), retract: async () => undefined };
    // Unsubscribing is held, so that notifications keep coming after the partner is removed.
    const iq = aroundRequests((child, send) => (child.getChild('unsubscribe') ? new Promise<Element>(() => undefined) : send()));
    const { harness, manager } = await startPartner(own, 'pubsub.mu.test', sink, { oneCopy: () => true, iq, onEvent: (m) => void (itemsOf(m).length > 0 && got++) });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(async () => (await oneCopyAt(own, harness.jid, '/tags/a10')) && (await oneCopyAt(own, harness.jid, '/tags/b10')) && manager.subscriptions().length === 2, 'both followed with one_copy on');
    void manager.removePartner(own.jid); // its unfollows wait one after the other for the held unsubscribe
    const gone = (): string | undefined => ['/tags/a10', '/tags/b10'].find((n) => !manager.subscriptions().includes(`${own.jid} ${n}`));
    await until(() => gone() !== undefined, 'a node unfollowed');
    await owner.iq('set', own.jid, publish(gone() as string, 'o', 'after removal'));
    await until(() => got === 1, 'the notification still delivered');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(written, [], 'nothing written for a partner no longer known');
  });

  it("a removed partner's other nodes are not written either while the first unsubscribe is waited for", async () => {
    const { own, owner } = await ownSite('pubsub.chi.test', ['/tags/a14', '/tags/b14']);
    const written: string[] = [];
    let got = 0;
    const sink: PartnerSink = { writeItem: async (_s, node, item) => (written.push(`+${String(item.attrs.id)}@${node}`), true), retract: async () => undefined };
    const iq = aroundRequests((child, send) => (child.getChild('unsubscribe') ? new Promise<Element>(() => undefined) : send()));
    const { harness, manager } = await startPartner(own, 'pubsub.psi.test', sink, { iq, onEvent: (m) => void (itemsOf(m).length > 0 && got++) });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(() => manager.subscriptions().length === 2, 'both nodes followed');
    void manager.removePartner(own.jid); // the first unsubscribe is never answered
    await until(() => manager.subscriptions().length < 2, 'the removal under way');
    for (const node of ['/tags/a14', '/tags/b14']) await owner.iq('set', own.jid, publish(node, 'o', 'after removal'));
    await until(() => got === 2, 'both notifications still delivered');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(written, [], 'nothing written for a partner no longer known (it would have gone into the content database)');
  });

  it('an older payload taken for a newer one, the newer unwritten when its node is unfollowed: the item is read again from the node still followed', async () => {
    const { own, owner } = await ownSite('pubsub.xi.test', ['/tags/a11', '/tags/b11']);
    const written: string[] = [];
    const sink: PartnerSink = {
      writeItem: async (_s, node, item) => {
        const title = item.getChildElements()[0]?.getChildText('title');
        if (node === '/tags/a11' && title === 'v2') return new Promise<boolean>(() => undefined); // never written
        written.push(`+${String(item.attrs.id)}@${node} ${String(title)}`);
        return true;
      },
      retract: async () => undefined,
    };
    let held: (() => void) | undefined;
    let handed = 0;
    const gate = (stanza: Element, deliver: () => void): void => {
      if (!held && itemsOf(stanza).some((i) => i.node === '/tags/a11' && i.payload) && plainText(stanza).includes('v1')) held = deliver; // v1's payload comes after its notification without payload
      else (handed++, deliver());
    };
    const follow = ['/tags/a11', '/tags/b11'];
    const { harness, manager } = await startPartner(own, 'pubsub.omicron.test', sink, { oneCopy: () => true, gate, follow, payloadWaitMs: 200 });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(async () => (await oneCopyAt(own, harness.jid, '/tags/a11')) && (await oneCopyAt(own, harness.jid, '/tags/b11')), 'both with one_copy on');
    for (const node of ['/tags/a11', '/tags/b11']) await owner.iq('set', own.jid, publish(node, 'u', 'v1'));
    await until(() => held !== undefined && handed === 1, "v1's notification without payload handed over first");
    held?.();
    await until(() => written.length === 1, 'v1 written');
    for (const node of ['/tags/a11', '/tags/b11']) await owner.iq('set', own.jid, publish(node, 'u', 'v2'));
    await until(() => handed === 3, "v2's payload and notification without payload handed over");
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(written, ['+u@/tags/a11 v1'], "v2's notification without payload was taken as done with v1's write");
    follow.splice(0, 1); // /tags/a11 no longer followed, its v2 never written
    manager.discoverSoon();
    await until(() => written.includes('+u@/tags/b11 v2'), 'v2 read again from /tags/b11');
  });

  it("a late payload of a one-copy node just unfollowed is written, and the notification is still offered to Hermod's other replication", async () => {
    const { own } = await ownSite('pubsub.sigma.test', ['/tags/a12', '/tags/b12']);
    const written: string[] = [];
    const sink: PartnerSink = { writeItem: async (_s, node, item) => (written.push(`+${String(item.attrs.id)}@${node}`), true), retract: async () => undefined };
    const follow = ['/tags/a12', '/tags/b12'];
    const { harness, manager } = await startPartner(own, 'pubsub.tau.test', sink, { oneCopy: () => true, follow, payloadWaitMs: 5_000 });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(async () => (await oneCopyAt(own, harness.jid, '/tags/a12')) && (await oneCopyAt(own, harness.jid, '/tags/b12')) && manager.subscriptions().length === 2, 'both with one_copy on');
    follow.splice(0, 1);
    manager.discoverSoon();
    await until(() => manager.subscriptions().length === 1, '/tags/a12 unfollowed');
    const late = new Element('message', { from: own.jid, to: harness.jid }).c('event', { xmlns: NS.PUBSUB_EVENT }).c('items', { node: '/tags/a12' }).c('item', { id: 'g' }).c('entry', { xmlns: 'http://www.w3.org/2005/Atom' }).c('title').t('late').root();
    assert.equal(await manager.handleEvent(late), false, 'not taken from the other replication');
    await until(() => written.length === 1, 'the late payload written');
    assert.deepEqual(written, ['+g@/tags/a12']);
  });

  it('a late payload of an unfollowed one-copy node is not written when it was retracted since: in the same digest, or by a node still followed', async () => {
    const { own, owner } = await ownSite('pubsub.omega.test', ['/tags/a15', '/tags/b15']);
    const written: string[] = [];
    const sink: PartnerSink = {
      writeItem: async (_s, node, item) => (written.push(`+${String(item.attrs.id)}@${node}`), true),
      retract: async (_s, node, id) => void written.push(`-${id}@${node}`),
    };
    const follow = ['/tags/a15', '/tags/b15'];
    const { harness, manager } = await startPartner(own, 'pubsub.alef.test', sink, { oneCopy: () => true, follow, payloadWaitMs: 5_000 });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(async () => (await oneCopyAt(own, harness.jid, '/tags/a15')) && (await oneCopyAt(own, harness.jid, '/tags/b15')) && manager.subscriptions().length === 2, 'both with one_copy on');
    follow.splice(0, 1);
    manager.discoverSoon();
    await until(() => manager.subscriptions().length === 1, '/tags/a15 unfollowed');
    const late = (children: (items: Element) => void): Element => {
      const items = new Element('message', { from: own.jid, to: harness.jid }).c('event', { xmlns: NS.PUBSUB_EVENT }).c('items', { node: '/tags/a15' });
      children(items);
      return items.root();
    };
    // 1. A digest of the ended node: the payload, then its retraction.
    await manager.handleEvent(late((items) => items.c('item', { id: 'p' }).c('entry', { xmlns: 'http://www.w3.org/2005/Atom' }).c('title').t('late').up().up().up().c('retract', { id: 'p' })));
    // 2. The node still followed retracts q; then the ended node's payload of q arrives.
    await owner.iq('set', own.jid, publish('/tags/b15', 'q', 'v1'));
    await until(() => written.includes('+q@/tags/b15'), 'q written from the node still followed');
    await owner.iq('set', own.jid, `<pubsub xmlns='${NS.PUBSUB}'><retract node='/tags/b15' notify='1'><item id='q'/></retract></pubsub>`);
    await until(() => written.includes('-q@/tags/b15'), 'q retracted there');
    await manager.handleEvent(late((items) => items.c('item', { id: 'q' }).c('entry', { xmlns: 'http://www.w3.org/2005/Atom' }).c('title').t('v1')));
    // 3. A late payload nobody retracted is still written (the grace period's point).
    await manager.handleEvent(late((items) => items.c('item', { id: 'r' }).c('entry', { xmlns: 'http://www.w3.org/2005/Atom' }).c('title').t('late')));
    await until(() => written.includes('+r@/tags/a15'), 'the late payload of r written');
    assert.deepEqual(written.filter((w) => w.endsWith('@/tags/a15')), ['+r@/tags/a15'], 'neither p nor q written from the ended node');
  });

  it('a service whose options form has no one_copy is not asked for it, at the follow or at later discoveries', async () => {
    const { own } = await ownSite('pubsub.upsilon.test', ['/tags/a13']);
    const asked: string[] = [];
    // The service as an older Hermod or another server answers: its options form without the field.
    const iq = aroundRequests(async (child, send) => {
      const options = child.getChild('options');
      if (options?.getChild('x')?.getChildren('field').some((f) => f.attrs.var === ONE_COPY_FIELD)) asked.push(String(options.attrs.node));
      const reply = await send();
      const x = reply.getChild('pubsub')?.getChild('options')?.getChild('x');
      if (x) x.children = x.children.filter((c) => typeof c === 'string' || c.attrs.var !== ONE_COPY_FIELD);
      return reply;
    });
    const sink: PartnerSink = { writeItem: async () => true, retract: async () => undefined };
    const { harness, manager } = await startPartner(own, 'pubsub.phi.test', sink, { oneCopy: () => true, iq });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(() => manager.subscriptions().length === 1, 'followed');
    for (let i = 0; i < 2; i++) {
      manager.discoverSoon();
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(asked, [], 'one_copy never submitted');
    assert.equal(await oneCopyAt(own, harness.jid, '/tags/a13'), false);
  });

  it('a subscription whose configuring failed is asked for one copy again by the discovery', async () => {
    const { own } = await ownSite('pubsub.bet.test', ['/tags/a16']);
    let refused = 0;
    // The first configure request (digests and one_copy after subscribing) gets no good answer.
    const iq = aroundRequests(async (child, send) => {
      if (refused === 0 && child.getChild('options')?.getChild('x')?.attrs.type === 'submit') {
        refused++;
        throw new Error('remote-server-timeout');
      }
      return send();
    });
    const sink: PartnerSink = { writeItem: async () => true, retract: async () => undefined };
    const { harness, manager } = await startPartner(own, 'pubsub.gimel.test', sink, { oneCopy: () => true, iq });
    stops.push(() => manager.stop(), () => harness.stop());
    await until(() => manager.subscriptions().length === 1 && refused === 1, 'followed, its configuring refused');
    // The discovery that followed it (or the next) asks again: the service still has it off.
    await until(() => oneCopyAt(own, harness.jid, '/tags/a16'), 'one copy on, asked for again');
  });

  it('an item of a node that delivers no payloads is fetched and written', async () => {
    await alice.iq('set', site.jid, create('/tags/bare', noPayloads));
    const f = await follower('pubsub.zeta.test', /^\/tags\/bare$/);
    await until(() => f.manager.subscriptions().some((s) => s.endsWith(' /tags/bare')), 'the subscription');
    await alice.iq('set', site.jid, publish('/tags/bare', 'v', 'notified'));
    // (A catch-up that read the node while the item was published may write it once more.)
    await until(() => f.written.length >= 1, 'the write');
    assert.deepEqual([...new Set(f.written)], ['+v@/tags/bare notified']);
    assert.deepEqual(f.fetches, ['/tags/bare v'], 'the notified item fetched');
  });
});
