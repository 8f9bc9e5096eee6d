// Source: Midgard's change notifications on D-Bus (dbus-next). midgard-core sends, for every
// object write, a signal `Notified` (interface org.midgardproject.notifier, signature `s`) on the
// object path /org/midgardproject/mgdschema/<Class>/<action> (replicator export/import:
// /org/midgardproject/replication/<Class>/<action>), whose string is the serialized object.
// Checked in midgard-core (midgard_dbus.c, midgard_object.c): sent on the system bus, actions
// create, update, delete, purge and get (on reads; the publisher publishes nothing for those);
// approve/unapprove send none; the replication path is defined there but never used.
// Signals are handed over one at a time, in order. A malformed signal or document is logged with
// the reason and skipped; when the bus goes away the source reconnects with backoff.
// It also emits Hermod's own signal for the inbound spool (see docs/midgard-importer.md).
// A Source (source.ts) of one signal per batch, with no checkpoint: signals are not replayed.

import dbus from 'dbus-next';
import type { Logger } from '../log.ts';
import type { BatchHandler, Source } from './source.ts';

export const NOTIFIER_INTERFACE = 'org.midgardproject.notifier';
export const NOTIFIER_PATH = '/org/midgardproject';
export const HERMOD_INTERFACE = 'org.midgardproject.hermod';
export const SPOOL_SIGNAL_PATH = '/org/midgardproject/hermod/spool';

export interface NotifiedSignal {
  /** `mgdschema` or `replication`. */
  area: string;
  className: string;
  action: string;
  text: string;
}

/** Object path -> area/class/action, or the reason it is not a Midgard notification path. */
export function parseNotifierPath(path: string): { area: string; className: string; action: string } | string {
  const m = /^\/org\/midgardproject\/(mgdschema|replication)\/([A-Za-z_][A-Za-z0-9_]*)\/([A-Za-z_]+)$/.exec(path);
  return m ? { area: m[1] as string, className: m[2] as string, action: m[3] as string } : `object path ${path} is not /org/midgardproject/{mgdschema|replication}/<Class>/<action>`;
}

export interface MidgardDbusSourceOptions {
  /** `system`, `session` or a D-Bus address (`unix:path=…`). */
  bus: string;
  log: Logger;
}

type Bus = ReturnType<typeof dbus.sessionBus>;

export class MidgardDbusSource implements Source<NotifiedSignal> {
  readonly feed: string;
  private handle: BatchHandler<NotifiedSignal> = async () => {};
  private bus: Bus | undefined;
  private stopped = false;
  private delay = 250;
  private timer: NodeJS.Timeout | undefined;
  private queue: Promise<void> = Promise.resolve();
  private connected = false;
  private failures = 0;

  constructor(private readonly o: MidgardDbusSourceOptions) {
    this.feed = `dbus:${o.bus}`;
  }

  /** Connects (and keeps reconnecting) in the background; resolves at once. A handler that rejects: the signal is logged and skipped. */
  async start(_since: unknown, handle: BatchHandler<NotifiedSignal>): Promise<void> {
    this.handle = handle;
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const { log } = this.o;
    let bus: Bus;
    try {
      bus = this.o.bus === 'system' ? dbus.systemBus() : this.o.bus === 'session' ? dbus.sessionBus() : dbus.sessionBus({ busAddress: this.o.bus });
    } catch (err) {
      this.lost(undefined, err);
      return;
    }
    this.bus = bus;
    bus.on('error', (err: unknown) => this.lost(bus, err));
    // dbus-next does not forward the stream's end; without it a vanished bus goes unnoticed.
    (bus as unknown as { _connection?: { on(event: 'end', fn: () => void): void } })._connection?.on('end', () => this.lost(bus, new Error('connection closed')));
    bus.on('connect', () => {
      const match = `type='signal',interface='${NOTIFIER_INTERFACE}',member='Notified'`;
      bus
        .call(new dbus.Message({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch', signature: 's', body: [match] }))
        .then(() => {
          this.connected = true;
          this.delay = 250;
          this.failures = 0;
          log.info('listening for Midgard signals', { bus: this.o.bus === 'system' || this.o.bus === 'session' ? this.o.bus : 'address' });
        })
        .catch((err: unknown) => this.lost(bus, err));
    });
    bus.on('message', (msg: InstanceType<typeof dbus.Message>) => {
      if (msg.type !== dbus.MessageType.SIGNAL || msg.interface !== NOTIFIER_INTERFACE || msg.member !== 'Notified') return;
      this.queue = this.queue.then(() => this.onSignal(msg));
    });
  }

  private async onSignal(msg: InstanceType<typeof dbus.Message>): Promise<void> {
    const { log } = this.o;
    const path = parseNotifierPath(msg.path ?? '');
    if (typeof path === 'string') {
      log.warn('D-Bus signal skipped', { reason: path });
      return;
    }
    if (msg.signature !== 's' || typeof msg.body[0] !== 'string') {
      log.warn('D-Bus signal skipped', { reason: `signature is "${msg.signature}", expected "s"`, path: msg.path });
      return;
    }
    try {
      await this.handle({ changes: [{ ...path, text: msg.body[0] as string }] });
    } catch (err) {
      log.warn('D-Bus signal skipped', { reason: err instanceof Error ? err.message : String(err), path: msg.path });
    }
  }

  private lost(bus: Bus | undefined, err: unknown): void {
    if (bus && bus !== this.bus) return;
    this.bus = undefined;
    try {
      bus?.disconnect();
    } catch {
      // already gone
    }
    if (this.stopped) return;
    const was = this.connected;
    this.connected = false;
    // Warn when a working bus goes away or the first attempt fails; retries stay at debug level.
    this.o.log[was || this.failures++ === 0 ? 'warn' : 'debug']('D-Bus connection lost; reconnecting', { reason: err instanceof Error ? err.message : String(err), retryInMs: this.delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 30_000);
  }

  /** Emits Hermod's `SpoolWritten(s file)` signal; false when not connected. */
  emitSpoolWritten(file: string): boolean {
    if (!this.bus || !this.connected) return false;
    this.bus.send(dbus.Message.newSignal(SPOOL_SIGNAL_PATH, HERMOD_INTERFACE, 'SpoolWritten', 's', [file]));
    return true;
  }

  /** Stops listening and waits for the signal under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const bus = this.bus;
    this.bus = undefined;
    bus?.disconnect();
    await this.queue;
  }
}
