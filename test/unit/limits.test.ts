// Unit tests of the service limits (src/pubsub/limits.ts) and their use by the pub/sub core:
// the token bucket per sender on a controlled clock, its bounded memory, the cap on max_items,
// the node quota per owner, admins exempt, the wire conditions from the one error table, and the
// `limits` section of the config file with errors naming the key.

import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { validateConfig } from '../../src/config/config.ts';
import { PubsubError } from '../../src/pubsub/errors.ts';
import { DEFAULT_LIMITS, NO_LIMITS, RateLimiter, checkMaxItems, checkNodeQuota, nodeItemLimit } from '../../src/pubsub/limits.ts';
import { DEFAULT_NODE_CONFIG } from '../../src/pubsub/node-config.ts';
import { PubsubService } from '../../src/pubsub/service.ts';
import type { Limits } from '../../src/pubsub/limits.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import { describeError, errorElement } from '../../src/xmpp/errors.ts';

function rejectsWith(condition: string, text?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof PubsubError, `expected PubsubError, got ${String(err)}`);
    assert.equal(err.condition, condition);
    if (text) assert.match(err.text ?? '', text);
    return true;
  };
}

describe('RateLimiter (token bucket per key)', () => {
  it('allows a burst, then one per 1/rate seconds, and says how long to wait', () => {
    let now = 1_000_000;
    const limiter = new RateLimiter({ perSecond: 2, burst: 3 }, () => now);
    assert.deepEqual([limiter.take('a'), limiter.take('a'), limiter.take('a')], [0, 0, 0]);
    assert.equal(limiter.take('a'), 500, 'empty: a token comes in 500 ms');
    now += 499;
    assert.equal(limiter.take('a'), 1, 'nothing was spent by the refused take');
    now += 1;
    assert.equal(limiter.take('a'), 0);
    assert.equal(limiter.take('a'), 500);
    // Other keys have their own bucket.
    assert.equal(limiter.take('b'), 0);
    // After a long pause the bucket is full again, never fuller.
    now += 60_000;
    assert.deepEqual([limiter.take('a'), limiter.take('a'), limiter.take('a'), limiter.take('a')], [0, 0, 0, 500]);
  });

  it('keeps memory bounded: refilled buckets are dropped, and at most maxKeys are held', () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 10 }, () => now, 100);
    for (let i = 0; i < 1000; i++) limiter.take(`u${i}@x.test`);
    assert.ok(limiter.size <= 100, `held ${limiter.size}`);
    now += 1_000; // every bucket has refilled: they equal fresh ones
    limiter.take('late@x.test');
    assert.equal(limiter.size, 1);
    // A sender that is being limited keeps its (empty) bucket while others come and go.
    for (let i = 0; i < 10; i++) limiter.take('flood@x.test');
    assert.ok(limiter.take('flood@x.test') > 0);
    for (let i = 0; i < 50; i++) limiter.take(`v${i}@x.test`);
    assert.ok(limiter.take('flood@x.test') > 0, 'still limited');
  });

  it('refuses a rate that is not positive', () => {
    assert.throws(() => new RateLimiter({ perSecond: 0, burst: 1 }), RangeError);
    assert.throws(() => new RateLimiter({ perSecond: 1, burst: 0 }), RangeError);
  });
});

describe('item and node limits (pure)', () => {
  const limits: Limits = { ...NO_LIMITS, maxItemsPerNode: 50, maxNodesPerOwner: 2 };
  it("caps max_items: 'max' and larger values keep the cap, a value above it is refused", () => {
    assert.equal(nodeItemLimit({ ...DEFAULT_NODE_CONFIG, maxItems: 'max' }, limits), 50);
    assert.equal(nodeItemLimit({ ...DEFAULT_NODE_CONFIG, maxItems: 10 }, limits), 10);
    assert.equal(nodeItemLimit({ ...DEFAULT_NODE_CONFIG, maxItems: 500 }, limits), 50, 'a node configured before the cap was lowered');
    assert.equal(nodeItemLimit({ ...DEFAULT_NODE_CONFIG, persistItems: false }, limits), 0);
    assert.throws(() => checkMaxItems(51, limits), rejectsWith('not-acceptable', /pubsub#max_items 51 is above this service's limit of 50 items per node/));
    checkMaxItems(50, limits);
    checkMaxItems('max', limits);
    checkMaxItems(undefined, limits);
  });

  it('counts owned nodes against the quota', () => {
    checkNodeQuota(1, limits);
    assert.throws(() => checkNodeQuota(2, limits), rejectsWith('max-nodes-exceeded', /you own 2 nodes, the most this service allows per owner \(2\)/));
    checkNodeQuota(1e9, NO_LIMITS);
  });

  it('maps to the wire through the one error table: policy-violation, cancel with max-nodes-exceeded / wait for the rate', () => {
    const quota = describeError(new PubsubError('max-nodes-exceeded', 'x'));
    assert.deepEqual(quota?.spec, { type: 'cancel', condition: 'policy-violation', pubsub: 'max-nodes-exceeded' });
    const el = errorElement(quota!.spec, quota!.text); // eslint-disable-line @typescript-eslint/no-non-null-assertion
    assert.ok(el.getChild('max-nodes-exceeded', 'http://jabber.org/protocol/pubsub#errors'));
    assert.ok(el.getChild('policy-violation', 'urn:ietf:params:xml:ns:xmpp-stanzas'));
    assert.deepEqual(describeError(new PubsubError('rate-limited'))?.spec, { type: 'wait', condition: 'policy-violation' });
  });
});

describe('PubsubService with limits', () => {
  const ALICE = 'alice@a.test/phone';
  const ADMIN = 'admin@a.test/desk';
  let now: number;
  let service: PubsubService;
  let store: MemoryStore;
  const make = (limits: Partial<Limits>): PubsubService =>
    new PubsubService({ store, admins: ['admin@a.test'], mayCreateNodes: () => true, notifier: () => {}, now: () => now, limits });
  const item = (id: string) => ({ item: { id, payload: `<p xmlns='urn:t'>${id}</p>` } });

  beforeEach(() => {
    now = 1_000_000;
    store = new MemoryStore();
    service = make({ maxItemsPerNode: 3, maxNodesPerOwner: 2, publishRate: { perSecond: 1, burst: 4 } });
  });

  it('keeps at most maxItemsPerNode items on a node with the default config (max_items "max")', async () => {
    await service.create(ALICE, 'n');
    assert.equal(service.defaultConfig().maxItems, 'max');
    for (const id of ['1', '2', '3', '4']) await service.publish(ALICE, 'n', item(id));
    assert.deepEqual((await service.getItems(ALICE, 'n')).map((i) => i.id).sort(), ['2', '3', '4']);
  });

  it('refuses max_items above the cap on create and on configure, and names the limit', async () => {
    await assert.rejects(service.create(ALICE, 'big', { maxItems: 4 }), rejectsWith('not-acceptable', /limit of 3 items per node/));
    await service.create(ALICE, 'n', { maxItems: 3 });
    await assert.rejects(service.configure(ALICE, 'n', { maxItems: 10 }), rejectsWith('not-acceptable', /max_items 10/));
    assert.equal((await service.getConfig(ALICE, 'n')).maxItems, 3, 'the refused change left the node as it was');
    await service.configure(ALICE, 'n', { title: 'other changes still work' });
  });

  it('refuses a node default above the cap at construction', () => {
    assert.throws(() => new PubsubService({ store, mayCreateNodes: () => true, notifier: () => {}, nodeDefaults: { maxItems: 10 }, limits: { maxItemsPerNode: 5 } }), rejectsWith('not-acceptable'));
  });

  it('refuses one node more than maxNodesPerOwner, also under concurrent creation; deleting one makes room; admins are exempt', async () => {
    const results = await Promise.allSettled(['a', 'b', 'c', 'd'].map((id) => service.create(ALICE, id)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 2);
    for (const r of results.filter((x) => x.status === 'rejected')) rejectsWith('max-nodes-exceeded')((r as PromiseRejectedResult).reason);
    const owned = (await service.affiliationsOf(ALICE)).filter((a) => a.affiliation === 'owner').map((a) => a.node);
    assert.equal(owned.length, 2);
    await service.delete(ALICE, owned[0]);
    await service.create(ALICE, 'again');
    for (const id of ['x1', 'x2', 'x3']) await service.create(ADMIN, id);
    // An existing id is still a conflict, not a quota error.
    await assert.rejects(service.create(ALICE, 'again'), rejectsWith('conflict'));
  });

  it('limits the publish rate per bare JID, with a retry time; other senders and admins are not affected; the node keeps working', async () => {
    await service.create(ALICE, 'n', { publishModel: 'open' });
    for (let i = 0; i < 4; i++) await service.publish(ALICE, 'n', item(`a${i}`));
    // Another resource of the same account shares the bucket.
    await assert.rejects(service.publish('alice@a.test/laptop', 'n', item('a4')), rejectsWith('rate-limited', /at most 1 per second \(bursts of 4\); retry in 1000 ms/));
    await service.publish('bob@b.test/x', 'n', item('b0'));
    for (let i = 0; i < 20; i++) await service.publish(ADMIN, 'n', item(`admin${i}`));
    now += 1000;
    await service.publish(ALICE, 'n', item('a5'));
    await assert.rejects(service.publish(ALICE, 'n', item('a6')), rejectsWith('rate-limited'));
    // A refused publish stored nothing.
    const ids = (await service.getItems(ALICE, 'n')).map((i) => i.id);
    assert.ok(!ids.includes('a4') && !ids.includes('a6'));
  });

  it('without limits (NO_LIMITS) nothing is counted', async () => {
    const free = make({});
    for (let i = 0; i < 5; i++) await free.create(ALICE, `n${i}`);
    for (let i = 0; i < 50; i++) await free.publish(ALICE, 'n0', item(`i${i}`));
    assert.equal((await free.getItems(ALICE, 'n0')).length, 50);
  });
});

describe('limits in the config file', () => {
  const base = { component: { jid: 'pubsub.example.org', secret: 's', server: 'xmpp://127.0.0.1:5347' } };
  it('defaults to DEFAULT_LIMITS', () => {
    assert.deepEqual(validateConfig(base, '/').limits, DEFAULT_LIMITS);
    assert.deepEqual(DEFAULT_LIMITS, { maxItemsPerNode: 100_000, maxNodesPerOwner: 1000, publishRate: { perSecond: 100, burst: 10_000 } });
  });

  it('reads every key, and publishRate false turns the rate limit off', () => {
    const c = validateConfig({ ...base, limits: { maxItemsPerNode: 10, maxNodesPerOwner: 5, publishRate: { perSecond: 0.5, burst: 3 } } }, '/');
    assert.deepEqual(c.limits, { maxItemsPerNode: 10, maxNodesPerOwner: 5, publishRate: { perSecond: 0.5, burst: 3 } });
    assert.equal(validateConfig({ ...base, limits: { publishRate: false } }, '/').limits.publishRate, undefined);
    assert.deepEqual(validateConfig({ ...base, limits: { publishRate: { burst: 50 } } }, '/').limits.publishRate, { perSecond: 100, burst: 50 });
  });

  it('names the key of every bad value', () => {
    const bad = (limits: unknown, message: RegExp): void => assert.throws(() => validateConfig({ ...base, limits }, '/'), message);
    bad({ maxItemsPerNode: 0 }, /limits\.maxItemsPerNode: must be a whole number from 1 to 1000000, got 0/);
    bad({ maxItemsPerNode: 2_000_000 }, /limits\.maxItemsPerNode: must be a whole number from 1 to 1000000, got 2000000/);
    bad({ maxNodesPerOwner: 'many' }, /limits\.maxNodesPerOwner: must be a whole number of at least 1, got "many"/);
    bad({ publishRate: true }, /limits\.publishRate: must be false \(no limit\) or an object/);
    bad({ publishRate: { perSecond: -1 } }, /limits\.publishRate\.perSecond: must be a positive number, got -1/);
    bad({ publishRate: { perSecond: 1, burst: 1.5 } }, /limits\.publishRate\.burst: must be a whole number of at least 1, got 1\.5/);
    bad({ publishRate: { rate: 1 } }, /limits\.publishRate\.rate: unknown key/);
    bad({ maxItems: 1 }, /limits\.maxItems: unknown key \(known: maxItemsPerNode, maxNodesPerOwner, publishRate\)/);
    bad([], /limits: must be an object/);
  });
});
