// The Midgard D-Bus source against a real private dbus-daemon, with signals sent by the real
// dbus-send exactly as midgard-core sends them: documents are handed over in order, malformed
// XML / foreign paths / wrong signatures are logged with the reason and skipped, the source
// reconnects when the bus goes away and comes back, and Hermod's SpoolWritten signal is emitted.
// Signals that arrive while a batch is being handled are handed over together as the next batch
// (bounded), in order.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import dbus from 'dbus-next';
import { parseMidgardXml } from '../../src/codecs/midgard.ts';
import { startDbus, type DbusDaemon } from '../../src/devenv/index.ts';
import type { Logger } from '../../src/log.ts';
import { article } from '../../bench/lib/midgard-objects.ts';
import { HERMOD_INTERFACE, MidgardDbusSource, SPOOL_SIGNAL_PATH, type NotifiedSignal } from '../../src/sources/midgard-dbus.ts';
import { eventually } from './client.ts';
import { useSite } from './fixtures.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/midgard/', import.meta.url));
const POLICY = fileURLToPath(new URL('../../deploy/dbus/hermod-midgard.conf', import.meta.url));

type Line = Record<string, unknown> & { msg: string; level: string };
function memoryLogger(lines: Line[], bindings: Record<string, unknown> = {}): Logger {
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ ...bindings, ...fields, msg, level });
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (b) => memoryLogger(lines, { ...bindings, ...b }) };
}

describe('Midgard D-Bus source on a private dbus-daemon', { timeout: 60_000 }, () => {
  const site = useSite({ name: 'dbus', xmpp: false });
  let bus: DbusDaemon;
  let source: MidgardDbusSource;
  const lines: Line[] = [];
  const handled: NotifiedSignal[] = [];
  const listening = (): number => lines.filter((l) => l.msg === 'listening for Midgard signals').length;

  before(async () => {
    bus = await site.dbus('bus');
    source = new MidgardDbusSource({ bus: bus.address, log: memoryLogger(lines) });
    site.onStop(() => source.stop());
    await source.start(undefined, async ({ changes }) => {
      for (const signal of changes) {
        parseMidgardXml(signal.text); // throws for malformed documents, as the publisher does
        handled.push(signal);
      }
    });
    await eventually(() => listening() === 1, 'source listening', 10_000);
  });

  it('hands over Notified documents in order with area, class and action', async () => {
    const article = await readFile(path.join(FIXTURES, 'article-hello.xml'), 'utf8');
    const topic = await readFile(path.join(FIXTURES, 'topic-news.xml'), 'utf8');
    await bus.emit('/org/midgardproject/mgdschema/midgard_topic/create', topic);
    await bus.emit('/org/midgardproject/mgdschema/midgard_article/update', article);
    await bus.emit('/org/midgardproject/replication/midgard_article/import', article);
    await eventually(() => handled.length === 3, 'three signals handled', 10_000);
    assert.deepEqual(handled.map((s) => [s.area, s.className, s.action]), [
      ['mgdschema', 'midgard_topic', 'create'],
      ['mgdschema', 'midgard_article', 'update'],
      ['replication', 'midgard_article', 'import'],
    ]);
    assert.equal(handled[1]?.text, article, 'the serialized object arrives unchanged');
  });

  it('malformed XML, a foreign path and a wrong signature are logged with the reason and skipped', async () => {
    const before = handled.length;
    await bus.emit('/org/midgardproject/mgdschema/midgard_article/update', '<midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8"><midgard_article guid=');
    await bus.emit('/org/midgardproject/other/thing', '<x/>');
    await promisify(execFile)('dbus-send', [`--bus=${bus.address}`, '--type=signal', '/org/midgardproject/mgdschema/midgard_article/update', 'org.midgardproject.notifier.Notified', 'int32:7']);
    const fine = await readFile(path.join(FIXTURES, 'article-meetup.xml'), 'utf8');
    await bus.emit('/org/midgardproject/mgdschema/midgard_article/create', fine);
    await eventually(() => handled.length === before + 1, 'the good signal after the bad ones', 10_000);
    const skipped = lines.filter((l) => l.msg === 'D-Bus signal skipped').map((l) => String(l.reason));
    assert.equal(skipped.length, 3);
    assert.match(skipped[0] as string, /not well-formed XML/);
    assert.match(skipped[1] as string, /is not \/org\/midgardproject\/\{mgdschema\|replication\}/);
    assert.match(skipped[2] as string, /signature is "i", expected "s"/);
  });

  it('reconnects when the bus goes away and comes back', async () => {
    await bus.stop();
    await eventually(() => lines.some((l) => l.msg === 'D-Bus connection lost; reconnecting'), 'loss noticed', 10_000);
    await bus.restart();
    await eventually(() => listening() === 2, 'listening again', 20_000);
    const before = handled.length;
    await bus.emit('/org/midgardproject/mgdschema/midgard_article/update', await readFile(path.join(FIXTURES, 'article-meetup.xml'), 'utf8'));
    await eventually(() => handled.length === before + 1, 'signal after reconnect', 10_000);
  });

  it("emits Hermod's SpoolWritten signal for an importer", async () => {
    const listener = dbus.sessionBus({ busAddress: bus.address });
    try {
      await listener.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [`type='signal',interface='${HERMOD_INTERFACE}'`] }));
      const got = new Promise<InstanceType<typeof dbus.Message>>((resolve) => listener.on('message', (m: InstanceType<typeof dbus.Message>) => m.interface === HERMOD_INTERFACE && resolve(m)));
      assert.equal(source.emitSpoolWritten('/var/spool/hermod/000000000001-x.xml'), true);
      const msg = await eventually(() => Promise.race([got, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]), 'SpoolWritten received', 10_000);
      assert.equal(msg.path, SPOOL_SIGNAL_PATH);
      assert.equal(msg.member, 'SpoolWritten');
      assert.deepEqual(msg.body, ['/var/spool/hermod/000000000001-x.xml']);
    } finally {
      listener.disconnect();
    }
  });

  it('signals arriving while a batch is handled form the next batch (at most batchMax), in order', async () => {
    const batches: NotifiedSignal[][] = [];
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    const batched = new MidgardDbusSource({ bus: bus.address, log: memoryLogger([]), batchMax: 40 });
    site.onStop(() => batched.stop());
    const seen = lines.length;
    await batched.start(undefined, async ({ changes }) => {
      batches.push(changes);
      if (batches.length === 1) await held; // the first batch is slow: the others queue meanwhile
    });
    // Both sources listen on the same bus: wait until the new one is too (it says so in its own log).
    const first = handled.length;
    const sender = dbus.sessionBus({ busAddress: bus.address });
    try {
      await eventually(async () => {
        sender.send(dbus.Message.newSignal('/org/midgardproject/mgdschema/midgard_article/get', 'org.midgardproject.notifier', 'Notified', 's', [article('probe', 0).xml]));
        await new Promise((r) => setTimeout(r, 50));
        return batches.length > 0;
      }, 'the second source receiving', 10_000);
      const objects = Array.from({ length: 100 }, (_, i) => article('dbus-batch', i));
      for (const a of objects) sender.send(dbus.Message.newSignal('/org/midgardproject/mgdschema/midgard_article/create', 'org.midgardproject.notifier', 'Notified', 's', [a.xml]));
      await sender.call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId' }));
      const ours = (): NotifiedSignal[] => batches.flat().filter((s) => s.action === 'create');
      // Delivered: the first source (same bus, its own connection) has them all; then the first batch ends.
      await eventually(() => handled.length >= first + objects.length, 'the first source received them all', 10_000);
      assert.equal(batches.length, 1, 'the first batch still held');
      release();
      await eventually(() => ours().length === objects.length, 'all 100 handed over', 10_000);
      assert.deepEqual(ours().map((s) => s.text), objects.map((a) => a.xml), 'in the order sent');
      const sizes = batches.slice(1).map((b) => b.filter((s) => s.action === 'create').length).filter((n) => n > 0);
      assert.ok(sizes.every((n) => n <= 40), `batches of at most 40, got ${JSON.stringify(sizes)}`);
      assert.ok(sizes.some((n) => n > 1), `signals that waited are handed over together, got ${JSON.stringify(sizes)}`);
      assert.equal(lines.slice(seen).filter((l) => l.msg === 'D-Bus signal skipped').length, 0);
    } finally {
      sender.disconnect();
    }
  });
});

// The shipped bus policy (deploy/dbus/hermod-midgard.conf, README "Midgard replication"): only the
// users it names (www-data) may send Notified, checked by D-Bus when the signal is sent. Senders
// run as other users with setpriv, so this needs root (CI runs as root).
describe('the shipped D-Bus policy: only Midgard\'s users may send its signals', { timeout: 60_000, skip: process.getuid?.() !== 0 ? 'needs root (setpriv)' : false }, () => {
  let dir: string;
  let bus: DbusDaemon;
  let source: MidgardDbusSource;
  const lines: Line[] = [];
  const handled: NotifiedSignal[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'hermod-dbus-policy-'));
    bus = await startDbus(dir, { include: [POLICY] });
    source = new MidgardDbusSource({ bus: bus.address, log: memoryLogger(lines) });
    await source.start(undefined, async ({ changes }) => {
      handled.push(...changes);
    });
    await eventually(() => lines.some((l) => l.msg === 'listening for Midgard signals'), 'source listening', 10_000);
  });

  after(async () => {
    await source?.stop();
    await bus?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a signal from www-data arrives; one from another local user (nobody) is refused by the bus; Hermod still receives', async () => {
    const WWW_DATA = { uid: 33, gid: 33 };
    const NOBODY = { uid: 65534, gid: 65534 };
    const text = (title: string): string => article('policy', title.length).xml.replace(/<title>[^<]*<\/title>/, `<title>${title}</title>`);
    await bus.emitAs(WWW_DATA, '/org/midgardproject/mgdschema/midgard_article/update', text('from Midgard'));
    await bus.emitAs(NOBODY, '/org/midgardproject/mgdschema/midgard_article/update', text('forged by another user'));
    await bus.emitAs(WWW_DATA, '/org/midgardproject/mgdschema/midgard_article/create', text('from Midgard, later'));
    await eventually(() => handled.length >= 2, 'the two signals of www-data', 10_000);
    // Give a refused signal time to show up if the bus had let it through (it would be in order, between the two).
    await new Promise((r) => setTimeout(r, 300));
    const titles = handled.map((s) => /<title>([^<]*)<\/title>/.exec(s.text)?.[1]);
    assert.deepEqual(titles, ['from Midgard', 'from Midgard, later']);
  });
});
