// The D-Bus source's own bounds, without a bus (the signals are handed to it as dbus-next would):
// D-Bus has no flow control, so what waits to be published is bounded in bytes, and a stop hands
// over what waits for a bounded time. The source on a real private dbus-daemon:
// test/e2e/midgard-dbus.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MidgardDbusSource, NOTIFIER_INTERFACE, type NotifiedSignal } from '../../src/sources/midgard-dbus.ts';
import type { BatchHandler } from '../../src/sources/source.ts';
import { captureLog } from './capture-log.ts';

/** A Notified signal as dbus-next hands it over. */
const message = (guid: string, text: string) => ({ type: 4, interface: NOTIFIER_INTERFACE, member: 'Notified', path: `/org/midgardproject/mgdschema/midgard_article/update`, signature: 's', body: [`<midgard_object guid="${guid}">${text}</midgard_object>`] });

/** A source whose handler is held shut until `open()`; `handled`: the guids handed over. */
function heldSource(options: { waitingBytes?: number; stopMs?: number }) {
  const log = captureLog();
  const source = new MidgardDbusSource({ bus: 'unix:path=/nonexistent', log, ...options });
  const handled: string[] = [];
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const handle: BatchHandler<NotifiedSignal> = async ({ changes }) => {
    await gate;
    for (const c of changes) handled.push(/guid="([^"]+)"/.exec(c.text)?.[1] ?? '?');
  };
  // As start() does, without connecting to a bus.
  Object.assign(source, { handle });
  const signal = (guid: string, text = 'x'.repeat(40)): void => (source as unknown as { onSignal(m: unknown): void }).onSignal(message(guid, text));
  return { source, log, handled, signal, open: () => open() };
}

describe('Midgard D-Bus source bounds', () => {
  it('what waits to be published is bounded in bytes: beyond, signals are skipped with one warning; the queue takes signals again once it drained', async () => {
    const s = heldSource({ waitingBytes: 200 });
    s.signal('g0'); // handed over at once, held by the handler
    await new Promise((r) => setImmediate(r));
    for (let i = 1; i <= 6; i++) s.signal(`g${i}`); // ~80 bytes each: two fit in 200
    const warned = s.log.lines.filter((l) => l.level === 'warn' && /too many bytes wait/.test(l.msg));
    assert.equal(warned.length, 1, 'one warning for the overflow, not one per signal');
    s.open();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(s.handled, ['g0', 'g1', 'g2']);
    s.signal('g7');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(s.handled, ['g0', 'g1', 'g2', 'g7'], 'taken again once drained');
    await s.source.stop();
  });

  it('a stop hands over what waits, for stopMs at most; the rest is logged, not waited for', async () => {
    const s = heldSource({ stopMs: 200 });
    s.signal('a0');
    await new Promise((r) => setImmediate(r));
    s.signal('a1');
    s.signal('a2');
    const release = setTimeout(() => s.open(), 500); // the batch in flight ends after the deadline
    const started = Date.now();
    await s.source.stop();
    clearTimeout(release);
    assert.ok(Date.now() - started < 5_000);
    assert.deepEqual(s.handled, ['a0'], 'the batch in flight finished; what waited behind it was dropped');
    assert.ok(s.log.lines.some((l) => l.msg.startsWith('stopping with D-Bus signals not published') && l.signals === 2));
  });
});
