// The work lease and heartbeats (src/cluster/lease.ts, cluster.ts) on the memory store and on a
// real pouchdb-server shared by two "processes" (two stores on one database): never two holders,
// a lapsed lease taken over only after the TTL of the taker's own clock, a race between two
// takers won by exactly one (CouchDB's _rev), a release handed over at once; a member cut off from
// the store loses the lease, is declared dead, has its state adopted and learns it was fenced.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Cluster, nextRound } from '../../src/cluster/cluster.ts';
import { CLUSTER_SPACE, Heartbeat, Lease, Observer } from '../../src/cluster/lease.ts';
import { eventually } from '../../src/devenv/process.ts';
import { silentLogger } from '../../src/log.ts';
import { couchFixture } from './couch-fixture.ts';
import { MemoryStore } from '../../src/store/memory.ts';
import type { StateSpace, Store } from '../../src/store/store.ts';

const TTL = 1_000;

/** Two members' leases on one space, each with its own (fake) clock reading `clock.t`. */
function contenders(space: StateSpace, clock: { t: number }): [Lease, Lease] {
  const now = (): number => clock.t;
  return [new Lease(space, 'work', 'A', TTL, new Observer(TTL, now), now), new Lease(space, 'work', 'B', TTL, new Observer(TTL, now), now)];
}

async function leaseContract(space: () => StateSpace): Promise<void> {
  const clock = { t: 0 };
  const [a, b] = contenders(space(), clock);
  const neverBoth = (): void => assert.ok(!(a.held() && b.held()), `both hold at t=${clock.t}`);
  assert.equal(await a.tick(), true, 'a free lease is taken at once');
  assert.equal(await b.tick(), false);
  // A renews within the TTL: B never gets it, however long it watches.
  for (clock.t = 300; clock.t <= 3_000; clock.t += 300) {
    assert.equal(await a.tick(), true);
    assert.equal(await b.tick(), false);
    neverBoth();
  }
  // A stops renewing (dies): B takes over only once it has seen the same lease for a TTL.
  const lastRenewal = clock.t - 300;
  clock.t = lastRenewal + TTL - 1;
  assert.equal(await b.tick(), false, 'not before a TTL of the taker');
  neverBoth();
  clock.t = lastRenewal + 2 * TTL;
  assert.equal(a.held(), false, 'the old holder has stopped by itself');
  assert.equal(await b.tick(), true, 'taken over after the TTL');
  neverBoth();
  assert.equal((await b.read())?.term, 2, 'a new term');
  assert.equal(await a.tick(), false, 'the old holder, back, does not get it');
  // Release: the other takes it at its next tick, without waiting.
  await b.release();
  assert.equal(b.held(), false);
  assert.equal(await a.tick(), true);
  // Two takers racing for a lapsed lease: exactly one wins.
  const [c, d] = [new Lease(space(), 'work', 'C', TTL, new Observer(TTL, () => clock.t), () => clock.t), new Lease(space(), 'work', 'D', TTL, new Observer(TTL, () => clock.t), () => clock.t)];
  await Promise.all([c.tick(), d.tick()]);
  clock.t += 3 * TTL;
  const won = await Promise.all([c.tick(), d.tick()]);
  assert.equal(won.filter(Boolean).length, 1, `exactly one of two racing takers: ${JSON.stringify(won)}`);
}

async function fencing(space: StateSpace): Promise<void> {
  const hb = new Heartbeat(space, { id: 'm1', host: 'h', pid: 1, jid: 'pubsub.x', startedAt: 0 });
  assert.equal(await hb.beat(), true);
  assert.equal(await hb.beat(), true);
  const raw = await space.get('member\0m1');
  assert.equal(await space.swap('member\0m1', raw, undefined), true, 'the leader removes a lapsed heartbeat');
  assert.equal(await hb.beat(), false, 'its owner learns it was fenced');
}

describe('work lease', () => {
  it('memory store: one holder, takeover after the TTL, release, one winner of a race', () => {
    const store = new MemoryStore();
    return leaseContract(() => store.state(CLUSTER_SPACE));
  });
  it('memory store: a removed heartbeat fences its owner', () => fencing(new MemoryStore().state(CLUSTER_SPACE)));

  it('a beat written whose reply was lost (the store wrote it, the request failed) does not fence its owner', async () => {
    const space = new MemoryStore().state(CLUSTER_SPACE);
    let loseReply = 0;
    const flaky: StateSpace = {
      get: (k) => space.get(k),
      getMany: (k) => space.getMany(k),
      range: (p, o) => space.range(p, o),
      batch: (ops) => space.batch(ops),
      swap: async (k, e, n) => {
        const ok = await space.swap(k, e, n);
        if (loseReply > 0) {
          loseReply--;
          throw new Error('socket hang up');
        }
        return ok;
      },
    };
    const hb = new Heartbeat(flaky, { id: 'm1', host: 'h', pid: 1, jid: 'pubsub.x', startedAt: 0 });
    assert.equal(await hb.beat(), true);
    loseReply = 2;
    await assert.rejects(hb.beat(), /socket hang up/);
    await assert.rejects(hb.beat(), /socket hang up/);
    assert.equal(await hb.beat(), true, 'the stored beat is one it wrote itself: not fenced');
    assert.equal(await hb.beat(), true);
    await space.batch([{ type: 'del', key: (await first(space.range('')))[0] }]); // declared dead by the leader
    assert.equal(await hb.beat(), false, 'removed: fenced');
  });
});

describe('failover timing', () => {
  it('rounds: writes every ttl/4, reads every ttl/8, and a round at the moment a watched value lapses', () => {
    assert.deepEqual(nextRound(4000, 0, 0), { at: 500, write: false });
    assert.deepEqual(nextRound(4000, 500, 0), { at: 1000, write: true });
    assert.deepEqual(nextRound(4000, 500, 0, 700), { at: 700, write: false }, 'a lapse due before the next round');
    assert.deepEqual(nextRound(4000, 700, 0), { at: 1000, write: true }, 'the renewal keeps its own period');
    assert.deepEqual(nextRound(100, 0, 0), { at: 25, write: false }, 'periods have a floor');
    const clock = { t: 0 };
    const seen = new Observer(TTL, () => clock.t);
    assert.equal(seen.nextLapse(), undefined);
    seen.lapsed('a', '1');
    clock.t = 300;
    seen.lapsed('b', '1');
    assert.equal(seen.nextLapse(), TTL);
    clock.t = TTL;
    assert.equal(seen.lapsed('a', '1'), true);
    assert.equal(seen.nextLapse(), 300 + TTL, 'a lapsed value is no longer waited for');
    seen.lapsed('b', '2');
    assert.equal(seen.nextLapse(), 2 * TTL, 'a changed value is timed anew');
  });

  it('a killed holder is replaced within ttl + ttl/8 of the kill, whatever the phases, and has stopped by then', async () => {
    let worst = 0;
    for (const phase of [0, 1, 124, 125, 126, 249, 250, 251]) {
      for (const offset of [0, 1, 62, 124, 125, 126, 200, 249]) {
        const clock = { t: 0 };
        const now = (): number => clock.t;
        const space = new MemoryStore().state(CLUSTER_SPACE);
        const holder = new Lease(space, 'work', 'A', TTL, new Observer(TTL, now), now);
        const seen = new Observer(TTL, now);
        const taker = new Lease(space, 'work', 'B', TTL, seen, now);
        assert.equal(await holder.tick(), true);
        const killedAt = 3 * TTL + phase;
        let renewAt = TTL / 4;
        let round = { at: offset, write: true };
        let lastWrite = offset;
        for (;;) {
          if (renewAt <= killedAt && renewAt <= round.at) {
            clock.t = renewAt;
            assert.equal(await holder.tick(), true);
            renewAt += TTL / 4;
            continue;
          }
          clock.t = round.at;
          if (round.write) lastWrite = round.at;
          if ((round.write || !taker.renewing) && (await taker.tick())) break;
          round = nextRound(TTL, round.at, lastWrite, seen.nextLapse());
        }
        assert.equal(holder.held(), false, `the old holder has stopped (kill at +${phase}, rounds from ${offset})`);
        const failover = clock.t - killedAt;
        assert.ok(failover <= TTL + TTL / 8, `taken over ${failover} ms after the kill (kill at +${phase}, rounds from ${offset})`);
        worst = Math.max(worst, failover);
      }
    }
    assert.ok(worst > TTL, 'the cases include a kill right after a renewal');
  });
});

/** A store whose state spaces can be cut off (every call rejects), as a process that hangs or loses the network. */
function cuttable(store: Store): { store: Store; cut: { on: boolean } } {
  const cut = { on: false };
  const guard = <T>(f: () => Promise<T>): Promise<T> => (cut.on ? Promise.reject(new Error('cut off')) : f());
  const wrapped = Object.create(store) as Store;
  wrapped.state = (ns: string): StateSpace => {
    const s = store.state(ns);
    return {
      get: (k) => guard(() => s.get(k)),
      getMany: (k) => guard(() => s.getMany(k)),
      batch: (ops) => guard(() => s.batch(ops)),
      swap: (k, e, n) => guard(() => s.swap(k, e, n)),
      range: (p, o) => {
        if (cut.on) throw new Error('cut off');
        return s.range(p, o);
      },
    };
  };
  return { store: wrapped, cut };
}

describe('work lease on a shared pouchdb-server', { timeout: 60_000 }, () => {
  const { open } = couchFixture();

  it("two processes' stores: one holder, takeover after the TTL, release, one winner of a race (_rev)", async () => {
    const [s1, s2] = [await open('lease'), await open('lease')];
    let n = 0;
    // Alternate between the two stores: each lease reads and writes through "its process's" store.
    await leaseContract(() => (n++ % 2 === 0 ? s1 : s2).state(CLUSTER_SPACE));
  });

  it('a removed heartbeat fences its owner', async () => fencing((await open('fencing')).state(CLUSTER_SPACE)));

  it('a member cut off from the store loses the lease to another within seconds, which adopts its state; back, it is fenced', async () => {
    const first = cuttable(await open('members'));
    const second = await open('members');
    const adopted: string[] = [];
    let fenced = false;
    const c1 = new Cluster({ store: first.store, jid: 'pubsub.x', shared: true, ttlMs: 600, log: silentLogger, onFenced: () => (fenced = true) });
    const c2 = new Cluster({ store: second, jid: 'pubsub.x', shared: true, ttlMs: 600, log: silentLogger, adopt: async (m) => void adopted.push(m) });
    try {
      await c1.start();
      await c2.start();
      assert.equal(c1.isLeader(), true, 'the first member takes the free lease');
      assert.equal(c2.isLeader(), false);
      const status = await c2.status();
      assert.deepEqual(status.members.map((m) => m.id).sort(), [c1.member, c2.member].sort());
      assert.equal(status.leases[0]?.holder, c1.member);

      first.cut.on = true;
      await eventually(async () => c2.isLeader() || undefined, 'the second member takes over', 10_000);
      assert.equal(c1.isLeader(), false, 'never two holders');
      await eventually(async () => adopted.includes(c1.member) || undefined, "the dead member's state adopted", 10_000);
      first.cut.on = false;
      await eventually(async () => fenced || undefined, 'the cut-off member learns it was fenced', 10_000);
      assert.equal(c1.isLeader(), false);
      assert.deepEqual((await c2.status()).members.map((m) => m.id), [c2.member]);
    } finally {
      first.cut.on = false;
      await c1.stop();
      await c2.stop();
    }
  });
});

describe('reply relay', () => {
  it("stores a reply carrying another member's tag for it, which takes it while it waits; leader-bound stanzas reach the leader only", async () => {
    const { Relay, RELAY_SPACE, tagOf } = await import('../../src/cluster/relay.ts');
    const { parse } = await import('ltx');
    const store = new MemoryStore();
    const got: Record<string, string[]> = { a: [], b: [], leader: [] };
    let waiting = false;
    const relays = (['aaaaaa', 'bbbbbb'] as const).map(
      (tag, i) =>
        new Relay({
          space: store.state(RELAY_SPACE),
          tag,
          deliver: (s) => void got[i === 0 ? 'a' : 'b']?.push(s.attrs.id as string),
          waiting: () => waiting,
          isLeader: () => i === 1,
          log: silentLogger,
          pollMs: 20,
        }),
    );
    const [a, b] = relays as [InstanceType<typeof Relay>, InstanceType<typeof Relay>];
    b.onLeaderStanza((s) => void got.leader?.push(s.attrs.from as string));
    a.onLeaderStanza(() => assert.fail('a is not the leader'));
    try {
      assert.equal(tagOf('qbbbbbb.1z'), 'bbbbbb');
      assert.equal(tagOf('hermod-barrier-bbbbbb.3'), 'bbbbbb');
      assert.equal(tagOf('q12'), undefined, 'single-process ids carry no tag');
      assert.equal(a.route(parse("<iq type='result' id='qaaaaaa.1' from='x@y'/>")), false, 'its own: not relayed');
      assert.equal(a.route(parse("<iq type='result' id='qbbbbbb.1' from='x@y'/>")), true);
      assert.equal(a.route(parse("<iq type='get' id='hermod-barrier-bbbbbb.7' from='pubsub.x' to='pubsub.x'/>")), true);
      a.toLeader(parse("<message from='pubsub.partner'/>"));
      waiting = true;
      await eventually(() => (got.b?.length === 2 && got.leader?.length === 1) || undefined, 'relayed stanzas taken', 5_000);
      assert.deepEqual(got.b, ['hermod-barrier-bbbbbb.7', 'qbbbbbb.1']);
      assert.deepEqual(got.a, []);
      assert.deepEqual(got.leader, ['pubsub.partner']);
      const left: string[] = [];
      for await (const [key] of store.state(RELAY_SPACE).range('')) left.push(key);
      assert.deepEqual(left, [], 'taken stanzas are deleted');
    } finally {
      for (const r of relays) r.stop();
    }
  });
});

describe('reply relay: a store write that fails', () => {
  it('a partner event for the leader is stored again until the store takes it (nothing times out for it); replies for other members are dropped (their requests time out)', async () => {
    const { Relay, RELAY_SPACE } = await import('../../src/cluster/relay.ts');
    const { parse } = await import('ltx');
    const store = new MemoryStore();
    const real = store.state(RELAY_SPACE);
    let failing = 2;
    const flaky: StateSpace = { ...real, get: (k) => real.get(k), getMany: (k) => real.getMany(k), range: (p, o) => real.range(p, o), swap: (k, e, n) => real.swap(k, e, n), batch: (ops) => (failing > 0 && ops.some((op) => op.type === 'put') ? (failing--, Promise.reject(new Error('store down'))) : real.batch(ops)) };
    const taken: string[] = [];
    const warned: string[] = [];
    const log = { ...silentLogger, warn: (msg: string) => void warned.push(msg), child: () => log };
    const a = new Relay({ space: flaky, tag: 'aaaaaa', deliver: () => undefined, waiting: () => false, isLeader: () => false, log, pollMs: 20 });
    const b = new Relay({ space: real, tag: 'bbbbbb', deliver: () => undefined, waiting: () => false, isLeader: () => true, log: silentLogger, pollMs: 20 });
    b.onLeaderStanza((s) => void taken.push(s.attrs.id as string));
    try {
      a.route(parse("<iq type='result' id='qbbbbbb.9' from='x@y'/>"));
      a.toLeader(parse("<message id='event-1' from='pubsub.partner'/>"));
      await eventually(() => taken.includes('event-1') || undefined, 'the event reached the leader after the store came back', 10_000);
      assert.ok(warned.includes('relay: replies for other members not stored (they will time out there)'));
      assert.ok(warned.includes('relay: partner events for the leader not stored; storing them again'));
      const left: string[] = [];
      for await (const [key] of real.range('bbbbbb\0')) left.push(key);
      assert.deepEqual(left, [], 'the reply for b was dropped, not stored later');
    } finally {
      a.stop();
      b.stop();
    }
  });
});

describe('reply relay: replies for no member', () => {
  it('the leader\'s sweep deletes what waits for a tag no member has (a forged id, or a member long gone), keeping live members\' replies and the leader\'s events', async () => {
    const { Relay, RELAY_SPACE } = await import('../../src/cluster/relay.ts');
    const { parse } = await import('ltx');
    const store = new MemoryStore();
    const space = store.state(RELAY_SPACE);
    // a is the member taking replies for others (never polls them: its tag is a); b is alive.
    const a = new Relay({ space, tag: 'aaaaaa', deliver: () => undefined, waiting: () => false, isLeader: () => false, log: silentLogger, pollMs: 60_000 });
    try {
      for (const id of ['qbbbbbb.1', 'qffffff.1', 'qffffff.2', 'q000000.9']) assert.equal(a.route(parse(`<iq type='result' id='${id}' from='x@y'/>`)), true);
      a.toLeader(parse("<message id='event-1' from='pubsub.partner'/>"));
      await eventually(async () => {
        let n = 0;
        for await (const _ of space.range('')) n++;
        return n === 5 || undefined;
      }, 'all five stored');
      assert.equal(await a.sweep(new Set(['aaaaaa', 'bbbbbb'])), 3);
      const left: string[] = [];
      for await (const [key] of space.range('')) left.push(key.split('\0')[0] as string);
      assert.deepEqual(left.sort(), ['bbbbbb', 'leader']);
    } finally {
      a.stop();
    }
  });
});

async function first<T>(it: AsyncIterable<T>): Promise<T> {
  for await (const x of it) return x;
  throw new Error('empty');
}
