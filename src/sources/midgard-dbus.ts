// Source: Midgard's change notifications on D-Bus (dbus-next). midgard-core sends, for every
// object write, a signal `Notified` (interface org.midgardproject.notifier, signature `s`) on the
// object path /org/midgardproject/mgdschema/<Class>/<action> (replicator export/import:
// /org/midgardproject/replication/<Class>/<action>), whose string is the serialized object.
// Checked in midgard-core (midgard_dbus.c, midgard_object.c): sent on the system bus, actions
// create, update, delete, purge and get (on reads; the publisher publishes nothing for those);
// approve/unapprove send none; the replication path is defined there but never used.
// Signals are handed over in batches, in arrival order (group commit): a signal arriving while
// nothing is being handled starts a batch at once (with every signal read in the same turn of the
// event loop); signals arriving while a batch is handled wait and form the next one, bounded in
// count and bytes (`batchMax`, `batchBytes`; the rest waits for the batch after). A signal with a
// foreign path or wrong signature is logged with the reason and skipped here; a bad document is
// the handler's to log and skip (the others of its batch go on; one that failed for a reason that
// may pass waits to be published again: src/replication/midgard.ts); a handler that rejects: every
// signal of that batch is logged and skipped. When the bus goes away the source reconnects with
// backoff. It also emits Hermod's own signal for the inbound spool (see docs/midgard-importer.md).
// A Source (source.ts) with no checkpoint: D-Bus signals are not replayed. What was received and
// not yet published (the batch under way and those waiting, in memory) is lost on kill -9, as
// it always was (batching does not widen that: signals used to wait in a queue of one-signal
// batches); nor does the bus keep signals sent while Hermod is down. What covers it today: each
// publication carries the whole object with its children, so the object's next signal brings a
// partner up to date; and a full resend is an export of the objects dropped into `midgard.spool`
// (durable: a file leaves the spool only once published). On SIGTERM the waiting signals are
// published before the source stops (for DBUS_STOP_MS at most; what is left then is logged).
// At most DBUS_WAITING_BYTES of signals wait; beyond, signals are skipped with a warning.

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

/** The object path a Notified signal came on. */
export const dbusPath = (s: NotifiedSignal): string => `/org/midgardproject/${s.area}/${s.className}/${s.action}`;

/** Default bounds of one batch: signals, and bytes of their serialized objects (UTF-8). */
export const DBUS_BATCH_MAX = 256;
export const DBUS_BATCH_BYTES = 8 * 1024 * 1024;
/**
 * Most bytes of signals waiting to be handed over (D-Bus has no flow control: Midgard writing
 * faster than they are published, e.g. a bulk import while the XMPP server reads slowly, would
 * grow the queue without end). Beyond, a signal is skipped with a warning: the object's next
 * signal brings a partner up to date, and an export into the spool resends everything (header).
 */
export const DBUS_WAITING_BYTES = 128 * 1024 * 1024;
/** How long stop() goes on handing over the signals waiting before it drops the rest (logged). */
export const DBUS_STOP_MS = 30_000;

export interface MidgardDbusSourceOptions {
  /** `system`, `session` or a D-Bus address (`unix:path=…`). */
  bus: string;
  log: Logger;
  /** Most signals per batch (default DBUS_BATCH_MAX). */
  batchMax?: number;
  /** Most bytes of serialized objects per batch (default DBUS_BATCH_BYTES); a larger signal goes alone. */
  batchBytes?: number;
  /** Most bytes waiting to be handed over (default DBUS_WAITING_BYTES); beyond, signals are skipped. */
  waitingBytes?: number;
  /** How long stop() hands over what waits (ms, default DBUS_STOP_MS). */
  stopMs?: number;
}

type Bus = ReturnType<typeof dbus.sessionBus>;

export class MidgardDbusSource implements Source<NotifiedSignal> {
  readonly feed: string;
  private handle: BatchHandler<NotifiedSignal> = async () => {};
  private bus: Bus | undefined;
  private stopped = false;
  private delay = 250;
  private timer: NodeJS.Timeout | undefined;
  /** Signals received, not yet handed over, with their sizes. */
  private readonly waiting: Array<{ signal: NotifiedSignal; bytes: number }> = [];
  private waitingBytes = 0;
  /** Set by stop(): past it, no further batch is handed over (ms since the epoch). */
  private stopDeadline: number | undefined;
  /** Signals skipped because too many bytes waited, since the queue last drained (one warning per 1 000). */
  private overflow = 0;
  /** The hand-over loop, while it runs. */
  private running: Promise<void> | undefined;
  private scheduled = false;
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
      this.onSignal(msg);
    });
  }

  /** Checks a signal and queues it for the next batch. */
  private onSignal(msg: InstanceType<typeof dbus.Message>): void {
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
    const text = msg.body[0] as string;
    const bytes = Buffer.byteLength(text);
    if (this.waitingBytes + bytes > (this.o.waitingBytes ?? DBUS_WAITING_BYTES) && this.waiting.length > 0) {
      // Warned once per overflow, then every 1 000 signals: a bulk import must not flood the log.
      if (this.overflow++ % 1000 === 0) log.warn('D-Bus signals skipped: too many bytes wait to be published (the objects\' next signals, or an export into the spool, bring partners up to date)', { path: msg.path, skipped: this.overflow, waitingBytes: this.waitingBytes });
      return;
    }
    this.waiting.push({ signal: { ...path, text }, bytes });
    this.waitingBytes += bytes;
    this.schedule();
  }

  /** Starts the hand-over loop after this turn of the event loop (signals read with this one join its batch), unless it runs. */
  private schedule(): void {
    if (this.running || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.running || this.waiting.length === 0) return;
      this.running = this.drain().finally(() => {
        this.running = undefined;
        if (this.waiting.length > 0) this.schedule();
      });
    });
  }

  /** Hands over batches until none is waiting: the next batch at once after the one before (group commit). */
  private async drain(): Promise<void> {
    const max = this.o.batchMax ?? DBUS_BATCH_MAX;
    const maxBytes = this.o.batchBytes ?? DBUS_BATCH_BYTES;
    while (this.waiting.length > 0 && !(this.stopDeadline !== undefined && Date.now() > this.stopDeadline)) {
      let n = 0;
      let bytes = 0;
      while (n < this.waiting.length && n < max && (n === 0 || bytes + (this.waiting[n]?.bytes ?? 0) <= maxBytes)) bytes += this.waiting[n++]?.bytes ?? 0;
      const changes = this.waiting.splice(0, n).map((w) => w.signal);
      this.waitingBytes -= bytes;
      if (this.waiting.length === 0) this.overflow = 0;
      try {
        await this.handle({ changes });
      } catch (err) {
        for (const signal of changes) this.o.log.warn('D-Bus signal skipped', { reason: err instanceof Error ? err.message : String(err), path: dbusPath(signal) });
      }
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

  /** Stops listening; resolves once the signals received have been handed over. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const bus = this.bus;
    this.bus = undefined;
    bus?.disconnect();
    const deadline = Date.now() + (this.o.stopMs ?? DBUS_STOP_MS);
    this.stopDeadline = deadline;
    while (this.running || this.scheduled || this.waiting.length > 0) {
      if (Date.now() > deadline && this.waiting.length > 0) {
        this.o.log.warn('stopping with D-Bus signals not published (the objects\' next signals, or an export into the spool, bring partners up to date)', { signals: this.waiting.length, bytes: this.waitingBytes });
        this.waiting.length = 0;
        this.waitingBytes = 0;
      }
      if (this.running) await this.running;
      else if (this.waiting.length > 0 || this.scheduled) {
        this.schedule();
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }
}
