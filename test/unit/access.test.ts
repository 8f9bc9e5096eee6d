// The presence and roster access models and presence-based delivery in the pub/sub core, with
// rosters and presence given as data (the XMPP side, XEP-0356, is tested end to end in
// pubsub-privilege.test.ts), and the XEP-0356 parsing of both servers' advertisements.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'ltx';
import { rosterGrants, type Roster, type RosterSource } from '../../src/pubsub/access.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import type { Recipient, ServiceEvent } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { parseGrant, parseRoster, privilegeElement } from '../../src/xmpp/privilege.ts';

const OWNER = 'owner@a.test';
const roster: Roster = new Map([
  ['friend@a.test', { subscription: 'from', groups: ['friends'] }],
  ['other@a.test', { subscription: 'to', groups: ['others'] }],
]);

function service(source: RosterSource | undefined, available: Set<string> = new Set()) {
  const sent: Array<{ event: ServiceEvent; to: string[] }> = [];
  const svc = new PubsubService({
    store: new MemoryStore(),
    notifier: (event: ServiceEvent, recipients: Recipient[]) => sent.push({ event, to: recipients.map((r) => r.jid) }),
    mayCreateNodes: () => true,
    ...(source ? { rosters: source } : {}),
    presence: { isAvailable: (jid) => available.has(jid) || [...available].some((a) => a.startsWith(`${jid}/`)) },
  });
  return { svc, sent };
}

const granted: RosterSource = { granted: () => true, covers: (o) => o.endsWith('@a.test'), roster: async () => roster };
const condition = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (e instanceof PubsubError ? e.condition : String(e)));
const item = (id: string) => ({ item: { id, payload: `<p xmlns='x'>${id}</p>` } });

describe('presence and roster access models', () => {
  it('decides from the roster: presence = from/both, roster = an allowed group', () => {
    assert.equal(rosterGrants({ accessModel: 'presence', rosterGroupsAllowed: [] }, [roster], 'friend@a.test/x'), true);
    assert.equal(rosterGrants({ accessModel: 'presence', rosterGroupsAllowed: [] }, [roster], 'other@a.test'), false);
    assert.equal(rosterGrants({ accessModel: 'roster', rosterGroupsAllowed: ['others'] }, [roster], 'other@a.test'), true);
    assert.equal(rosterGrants({ accessModel: 'roster', rosterGroupsAllowed: ['others'] }, [roster], 'friend@a.test'), false);
  });

  it('refuses the models without a privilege, or for an owner no privilege covers', async () => {
    assert.equal(await condition(service(undefined).svc.create(OWNER, 'n', { accessModel: 'roster' })), 'not-acceptable');
    const none: RosterSource = { granted: () => false, covers: () => false, roster: async () => new Map() };
    assert.equal(await condition(service(none).svc.create(OWNER, 'n', { accessModel: 'presence' })), 'not-acceptable');
    assert.equal(await condition(service(granted).svc.create('someone@b.test', 'n', { accessModel: 'presence' })), 'not-acceptable');
  });

  it('lets related entities subscribe and notifies them; refuses others with the XEP-0060 conditions', async () => {
    const { svc, sent } = service(granted);
    await svc.create(OWNER, 'p', { accessModel: 'presence' });
    await svc.create(OWNER, 'r', { accessModel: 'roster', rosterGroupsAllowed: ['friends'] });
    await svc.subscribe('friend@a.test/x', 'p', 'friend@a.test/x');
    await svc.subscribe('friend@a.test/x', 'r', 'friend@a.test/x');
    assert.equal(await condition(svc.subscribe('other@a.test/x', 'p', 'other@a.test/x')), 'presence-subscription-required');
    assert.equal(await condition(svc.getItems('other@a.test/x', 'r')), 'not-in-roster-group');
    await svc.publish(OWNER, 'r', item('one'));
    assert.deepEqual(sent.filter((s) => s.event.kind === 'items').map((s) => s.to), [['friend@a.test/x']]);
    // A roster that cannot be read refuses instead of guessing.
    const broken: RosterSource = { ...granted, roster: async () => Promise.reject(new Error('timeout')) };
    const b = service(broken);
    await b.svc.create(OWNER, 'p', { accessModel: 'presence' });
    assert.equal(await condition(b.svc.subscribe('friend@a.test/x', 'p', 'friend@a.test/x')), 'presence-subscription-required');
  });

  it('owner actions by a stranger are forbidden whatever the access model: never the model\'s own condition, which would say subscribing could help (§8.2.3.2, §8.4.3.1, §8.5.3.2)', async () => {
    const { svc } = service(granted);
    await svc.create(OWNER, 'w', { accessModel: 'whitelist' });
    await svc.create(OWNER, 'p', { accessModel: 'presence' });
    await svc.create(OWNER, 'r', { accessModel: 'roster', rosterGroupsAllowed: ['friends'] });
    await svc.create(OWNER, 'a', { accessModel: 'authorize' });
    for (const node of ['w', 'p', 'r', 'a']) {
      for (const who of ['stranger@b.test/x', 'friend@a.test/x']) {
        const asked = {
          getConfig: await condition(svc.getConfig(who, node)),
          configure: await condition(svc.configure(who, node, { title: 'mine' })),
          purge: await condition(svc.purge(who, node)),
          delete: await condition(svc.delete(who, node)),
          affiliations: await condition(svc.getAffiliations(who, node)),
        };
        assert.deepEqual(asked, { getConfig: 'forbidden', configure: 'forbidden', purge: 'forbidden', delete: 'forbidden', affiliations: 'forbidden' }, `${who} on ${node}`);
      }
    }
    // What the access model governs keeps its conditions.
    assert.equal(await condition(svc.subscribe('stranger@b.test/x', 'w', 'stranger@b.test/x')), 'closed-node');
    assert.equal(await condition(svc.getItems('stranger@b.test/x', 'p')), 'presence-subscription-required');
  });

  it('a configure while the owner\'s roster cannot be read keeps the subscriptions only a roster allows (a removal cannot be undone); an outcast still goes', async () => {
    let readable = true;
    const flaky: RosterSource = { ...granted, roster: async () => (readable ? roster : Promise.reject(new Error('remote-server-timeout'))) };
    const { svc } = service(flaky);
    await svc.create(OWNER, 'r', { accessModel: 'roster', rosterGroupsAllowed: ['friends'] });
    await svc.subscribe('friend@a.test/x', 'r', 'friend@a.test/x');
    await svc.subscribe('other@a.test/x', 'r', 'other@a.test/x').catch(() => undefined);
    await svc.setAffiliations(OWNER, 'r', [{ jid: 'stranger@b.test', affiliation: 'member' }]);
    await svc.subscribe('stranger@b.test/x', 'r', 'stranger@b.test/x');
    const subscribers = async (): Promise<string[]> => (await svc.getSubscriptions(OWNER, 'r')).map((s) => s.jid).sort();
    assert.deepEqual(await subscribers(), ['friend@a.test/x', 'stranger@b.test/x']);
    readable = false;
    await svc.configure(OWNER, 'r', { title: 'renamed' });
    await svc.setAffiliations(OWNER, 'r', [{ jid: 'stranger@b.test', affiliation: 'outcast' }]);
    assert.deepEqual(await subscribers(), ['friend@a.test/x'], 'the friend kept while the roster is unread; the outcast removed');
    readable = true;
    await svc.configure(OWNER, 'r', { rosterGroupsAllowed: ['others'] });
    assert.deepEqual(await subscribers(), [], 'with the roster read: no longer in an allowed group, removed');
  });
});

describe('publish_model subscribers on a roster node', () => {
  it('a subscriber publishes while the roster lets it in; taken out of the allowed group, or while no roster can be read, it publishes nothing, as it receives nothing', async () => {
    let current: Roster = roster;
    let readable = true;
    const source: RosterSource = { ...granted, roster: async () => (readable ? current : Promise.reject(new Error('remote-server-timeout'))) };
    const { svc } = service(source);
    await svc.create(OWNER, 'r', { accessModel: 'roster', rosterGroupsAllowed: ['friends'], publishModel: 'subscribers' });
    await svc.subscribe('friend@a.test/x', 'r', 'friend@a.test/x');
    assert.equal(await condition(svc.publish('friend@a.test/x', 'r', item('while-friend'))), 'ok');
    assert.equal(await condition(svc.publish('other@a.test/x', 'r', item('not-subscribed'))), 'forbidden');
    readable = false;
    assert.equal(await condition(svc.publish('friend@a.test/x', 'r', item('roster-unreadable'))), 'forbidden', 'no roster to say so: refused, not guessed');
    readable = true;
    current = new Map([['friend@a.test', { subscription: 'from', groups: ['others'] }]]);
    assert.equal(await condition(svc.publish('friend@a.test/x', 'r', item('moved-group'))), 'forbidden', 'still subscribed, but no longer in an allowed group');
    assert.deepEqual((await svc.getSubscriptions(OWNER, 'r')).map((sub) => sub.jid), ['friend@a.test/x'], 'the subscription itself is still there');
    assert.equal(await condition(svc.publish(OWNER, 'r', item('owner'))), 'ok', 'the owner publishes as ever');
  });
});

describe('presence-based delivery and on_sub_and_presence', () => {
  it('notifies available subscribers only, and sends the last item to a resource that becomes available', async () => {
    const available = new Set(['on@a.test/desk']);
    const { svc, sent } = service(undefined, available);
    await svc.create(OWNER, 'n', { presenceBasedDelivery: true, sendLastPublishedItem: 'on_sub_and_presence' });
    await svc.subscribe('on@a.test/desk', 'n', 'on@a.test');
    await svc.subscribe('off@a.test/desk', 'n', 'off@a.test');
    sent.splice(0);
    await svc.publish(OWNER, 'n', item('a'));
    assert.deepEqual(sent.map((s) => s.to), [['on@a.test']]);
    sent.splice(0);
    available.add('off@a.test/phone'); // as the presence tracker marks it before telling the service
    assert.equal(await svc.entityAvailable('off@a.test/phone'), 1);
    assert.equal(sent[0]?.event.kind === 'items' && sent[0].event.delayed, true);
    assert.deepEqual(sent.map((s) => s.to), [['off@a.test/phone']]);
    assert.equal(await svc.entityAvailable('stranger@a.test/x'), 0);
  });

  it('an owner approving a subscriber that is not available sends it no last item (it gets it once available)', async () => {
    const available = new Set<string>();
    const { svc, sent } = service(undefined, available);
    await svc.create(OWNER, 'p', { accessModel: 'authorize', presenceBasedDelivery: true });
    await svc.publish(OWNER, 'p', item('a'));
    await svc.subscribe('late@a.test/desk', 'p', 'late@a.test');
    sent.splice(0);
    await svc.setSubscriptions(OWNER, 'p', [{ jid: 'late@a.test', state: 'subscribed' }]);
    assert.deepEqual(sent.filter((s) => s.event.kind === 'items'), [], 'not while it is away');
    available.add('late@a.test/desk');
    assert.equal(await svc.entityAvailable('late@a.test/desk'), 1);
  });
});

describe('XEP-0356 advertisements', () => {
  it('reads ejabberd (privilege:1) and Prosody (privilege:2) messages and roster results', () => {
    const ejabberd = parse(`<message from='b.test' to='pubsub.b.test'><privilege xmlns='urn:xmpp:privilege:1'><perm type='none' access='message'/><perm type='get' access='roster'/><perm type='roster' access='presence'/></privilege></message>`);
    const prosody = parse(`<message from='a.test'><privilege xmlns='urn:xmpp:privilege:2'><perm type='both' access='roster'/></privilege></message>`);
    assert.deepEqual(parseGrant(privilegeElement(ejabberd) as never), { namespace: 'urn:xmpp:privilege:1', roster: 'get', presence: 'roster' });
    assert.deepEqual(parseGrant(privilegeElement(prosody) as never), { namespace: 'urn:xmpp:privilege:2', roster: 'both', presence: 'none' });
    const result = parseRoster(parse(`<iq type='result'><query xmlns='jabber:iq:roster'><item jid='Carol@A.test' subscription='from'><group>friends</group></item><item jid='bad@@x'/></query></iq>`));
    assert.deepEqual([...result], [['carol@a.test', { subscription: 'from', groups: ['friends'] }]]);
  });
});
