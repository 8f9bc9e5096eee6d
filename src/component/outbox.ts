// The outgoing queue for notifications. Fan-out pushes serialized stanzas here and returns at
// once; the outbox writes them to the socket in large chunks, waits for 'drain' when the socket
// pushes back, and holds them while the component is disconnected (bounded: past the limit the
// oldest unsent are dropped and counted). Request replies do not queue behind it.
//
// Confirmation: XEP-0114 has no acknowledgements, so a stanza written to the socket may still be
// lost when the server goes away (unread in its buffers). With a `barrier` the outbox follows
// written stanzas with an IQ addressed to the component itself; the server handles a stream's
// stanzas in order, so when that IQ comes back every stanza before it has been routed by the
// server. A server that is going away can still drop what it routed a moment before (ejabberd
// closes its client sessions first and its component connections after; a stanza routed to a
// session being closed is lost), so a routed stanza is confirmed (and, when durable, its journal
// position acknowledged) only once it has been routed for `settleMs` while the stream stayed up;
// on disconnect the unconfirmed ones, routed or not, are written again after reconnect (at least
// once: a subscriber may see such an item id twice, never lose it). A deliberate stop settles at once. One barrier is in flight
// at a time: it ends the first chunk written while none is, and when it comes back the next one
// covers everything written meanwhile, so a backed-up fan-out costs one barrier (and one journal
// acknowledgement) per round trip to the server, not one per 64 KiB chunk. Stanzas pushed without
// a durable tag (MAM result pages) are not written again: their request is gone with the stream.
// If Hermod itself dies (kill -9), what the server had routed (a barrier came back) counts as
// delivered: the server delivers it without us (onRouted records the position in the journal).
// Everything after that position is delivered again by whoever opens the journal next, with the
// same item ids: at least once. What was merely written cannot count: a process killed with unread
// data in its socket's receive queue makes the kernel reset the connection, and a reset discards
// what still waits in the kernel's send queue (a server that reads slowly leaves whole chunks
// there: e2e/ajatus-batch lost 65 documents that way when "written" counted as delivered). So a
// kill -9 may repeat, to a subscriber, the notifications of about one barrier round trip; it
// loses none.
// Back-pressure: `unwritten` counts the characters queued and not yet written; a producer that
// can outrun the server (replication publishing a large database while the server reads slowly,
// or while it is down) waits with `whenBelow` before it produces more, so the queue stays small
// instead of growing toward `limit`, where the oldest unsent notifications would be dropped.
// Fan-out caused by requests over the wire is not held back (a publish is answered once it is
// durable; and there are no requests while disconnected).

import type { Element } from 'ltx';
import type { Logger } from '../log.ts';

export interface OutboxSocket {
  /** Writes a chunk; false when the socket pushes back (then 'drain' comes when it takes more). */
  write(chunk: string): boolean;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  removeListener(event: 'drain' | 'close', listener: () => void): unknown;
}

/** Where a durable stanza sits in the notification journal: event sequence, recipient index. */
export interface DurableTag {
  seq: number;
  index: number;
}

export interface OutboxOptions {
  /** Most stanzas held (unconfirmed) while disconnected or backed up. */
  limit?: number;
  /** Bytes joined into one socket write. */
  chunkBytes?: number;
  log: Logger;
  /** The component JID: with it, written stanzas are confirmed by a barrier IQ to itself (above). */
  barrierJid?: string;
  /**
   * Milliseconds after which a barrier that has not come back no longer holds the next one back
   * (the server lost it, or routed it elsewhere): another is written, covering everything written
   * so far; whichever comes back first confirms what it covers. Default 15 000.
   */
  barrierTimeoutMs?: number;
  /**
   * Milliseconds a routed stanza must stay routed, with the stream up, before it counts as
   * confirmed (see the header). Default 2 000; 0 confirms as soon as the barrier comes back.
   */
  settleMs?: number;
  /** This cluster member's tag in barrier ids (`hermod-barrier-<tag>.<n>`; src/cluster/relay.ts). */
  barrierTag?: string;
  /**
   * A barrier carrying another member's tag (the server delivered it here): relays it; true when
   * taken so. Without it such barriers are dropped as stale.
   */
  relay?: (stanza: Element) => boolean;
  /** The newest durable stanza that the server has now taken (all before it too). */
  onConfirmed?: (last: DurableTag) => void;
  /** Durable stanzas dropped because the outbox was full. */
  onDropped?: (tags: DurableTag[]) => void;
  /**
   * The server has routed everything up to durable stanza `last` (a barrier came back): a crash
   * of this process no longer takes it back (see the header). Not yet confirmed: it may still be
   * written again after a disconnect (onRewound).
   */
  onRouted?: (last: DurableTag) => void;
  /** Written but unconfirmed durable stanzas were queued again (the connection was lost). */
  onRewound?: () => void;
}

/** A producer held by whenBelow: its bound, its longest wait while connected, its timer (none while disconnected). */
interface BelowWaiter {
  chars: number;
  maxWaitMs: number;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** whenBelow during a stop while the server is not connected: the producer is to publish nothing more. */
export class ProducerStopped extends Error {
  constructor() {
    super('stopping while the XMPP server is not connected: nothing more is published (the batch is not recorded, and is published again at the next start)');
    this.name = 'ProducerStopped';
  }
}

const BARRIER_PREFIX = 'hermod-barrier-';
/** No durable tag (tagSeq value). */
const NONE = -1;

export class Outbox {
  private queue: string[] = [];
  private tagSeq: number[] = [];
  private tagIndex: number[] = [];
  /** Absolute positions (stanzas pushed since start): queue[0] is at `base`. */
  private base = 0;
  /** Next to write. */
  private head = 0;
  /** Everything before this has been confirmed by the server (or written, without barriers). */
  private confirmed = 0;
  /** Everything before this has been routed by the server (a barrier came back); >= confirmed. */
  private routed = 0;
  /** Routed positions not yet settled, oldest first, with when their barrier came back. */
  private settling: Array<{ position: number; at: number }> = [];
  private settleTimer: NodeJS.Timeout | undefined;
  private readonly settleMs: number;
  /**
   * Barriers in flight, oldest first: id, the absolute position each confirms (exclusive), whether
   * its timer has run out. Normally one; another only once the newest is overdue (barrierTimeoutMs).
   */
  private barriers: Array<{ id: string; position: number; overdue: boolean }> = [];
  private overdueTimer: NodeJS.Timeout | undefined;
  private readonly barrierTimeoutMs: number;
  private barrierCounter = 0;
  private socket: OutboxSocket | undefined;
  private waitingDrain = false;
  private scheduled = false;
  private drainedWaiters: Array<() => void> = [];
  /** Characters of the stanzas queued and not yet written (positions head .. end). */
  private unwrittenChars = 0;
  /** Producers waiting for `unwrittenChars` to fall to their bound (whenBelow). */
  private belowWaiters: BelowWaiter[] = [];
  /** Set by stopProducers(): whenBelow holds no one any more. */
  private producersStopped = false;
  private readonly limit: number;
  private readonly chunkBytes: number;
  private readonly log: Logger;
  private readonly barrierJid: string | undefined;
  dropped = 0;
  /** Stanzas the server has routed (or written, without barriers); written again after a disconnect, counted again. */
  sent = 0;
  /** Barrier IQs written (since start). */
  barriersSent = 0;

  constructor(private readonly options: OutboxOptions) {
    this.limit = options.limit ?? 250_000;
    this.chunkBytes = options.chunkBytes ?? 64 * 1024;
    this.barrierTimeoutMs = options.barrierTimeoutMs ?? 15_000;
    this.settleMs = options.settleMs ?? 2_000;
    this.log = options.log;
    this.barrierJid = options.barrierJid;
  }

  private get end(): number {
    return this.base + this.queue.length;
  }

  /** Stanzas not yet confirmed (queued, written and awaiting the server's barrier, or settling). */
  get pending(): number {
    return this.end - this.confirmed;
  }

  /** Stanzas the server has not routed yet (queued, or written and awaiting the barrier): the backlog. */
  get unrouted(): number {
    return this.end - this.routed;
  }

  /** Stanzas written to the socket and not yet routed by the server. */
  get inFlight(): number {
    return this.head - this.routed;
  }

  /** Characters of stanza text the outbox holds (queued, written and unconfirmed; confirmed ones are let go). O(queue): for tests. */
  get heldChars(): number {
    let n = 0;
    for (const stanza of this.queue) n += stanza.length;
    return n;
  }

  /** Characters (UTF-16 code units, ≈ bytes) of the stanzas queued and not yet written to the socket. */
  get unwritten(): number {
    return this.unwrittenChars;
  }

  /**
   * Back-pressure for a producer that can outrun the server: resolves once at most `chars`
   * characters wait unwritten. While connected, also after `maxWaitMs` (a stalled server slows
   * the producer to one batch per wait, never stops it). While no socket is attached it waits
   * for the connection, however long: otherwise a producer (replication publishing a database
   * while the server is down) would fill the outbox up to `limit`, where the oldest durable
   * notifications are dropped for good (journal.dropped); held back, it loses nothing, since a
   * source advances its checkpoint only past what it published. After stopProducers() (a
   * stop): at once while connected, else rejects with ProducerStopped.
   */
  whenBelow(chars: number, maxWaitMs: number): Promise<void> {
    if (this.unwrittenChars <= chars) return Promise.resolve();
    if (this.producersStopped) return this.socket ? Promise.resolve() : Promise.reject(new ProducerStopped());
    return new Promise((resolve, reject) => {
      const waiter: BelowWaiter = {
        chars,
        maxWaitMs,
        resolve: (): void => {
          clearTimeout(waiter.timer);
          this.belowWaiters = this.belowWaiters.filter((w) => w !== waiter);
          resolve();
        },
        reject: (err: Error): void => {
          clearTimeout(waiter.timer);
          this.belowWaiters = this.belowWaiters.filter((w) => w !== waiter);
          reject(err);
        },
        timer: undefined,
      };
      if (this.socket) this.armBelow(waiter);
      this.belowWaiters.push(waiter);
    });
  }

  /** Starts a waiter's longest wait (while connected only). */
  private armBelow(waiter: BelowWaiter): void {
    clearTimeout(waiter.timer);
    waiter.timer = setTimeout(() => waiter.resolve(), waiter.maxWaitMs);
    waiter.timer.unref();
  }

  /**
   * Hermod is stopping, and a source held by whenBelow must not hold the stop. While connected,
   * producers go on (what they push is being written); while not, they get ProducerStopped, now
   * and on every later call that would wait: they publish nothing more (their source records
   * nothing of the batch, which is published again at the next start), so the outbox is not
   * filled past its limit on the way out.
   */
  stopProducers(): void {
    this.producersStopped = true;
    for (const waiter of [...this.belowWaiters]) {
      if (this.socket) waiter.resolve();
      else waiter.reject(new ProducerStopped());
    }
  }

  /** Wakes the producers whose bound is met. */
  private wakeBelow(): void {
    if (this.belowWaiters.length === 0) return;
    for (const waiter of [...this.belowWaiters]) if (this.unwrittenChars <= waiter.chars) waiter.resolve();
  }

  /** Start writing to a (newly connected) socket. */
  attach(socket: OutboxSocket): void {
    this.socket = socket;
    this.waitingDrain = false;
    for (const waiter of this.belowWaiters) this.armBelow(waiter);
    this.schedule();
  }

  /**
   * Stop writing: the socket is gone. What is queued waits for the next attach; what was written
   * but not confirmed is queued again (durable stanzas only).
   */
  detach(): void {
    this.socket = undefined;
    this.waitingDrain = false;
    this.barriers = [];
    clearTimeout(this.overdueTimer);
    this.settling = [];
    clearTimeout(this.settleTimer);
    this.routed = this.confirmed;
    if (this.head > this.confirmed) {
      const from = this.confirmed - this.base;
      const to = this.head - this.base;
      const keep: number[] = [];
      for (let i = from; i < to; i++) if (this.tagSeq[i] !== NONE) keep.push(i);
      if (keep.length > 0) this.options.onRewound?.();
      if (keep.length < to - from) {
        const pick = <T>(a: T[]): T[] => keep.map((i) => a[i] as T);
        this.queue.splice(from, to - from, ...pick(this.queue));
        this.tagSeq.splice(from, to - from, ...pick(this.tagSeq));
        this.tagIndex.splice(from, to - from, ...pick(this.tagIndex));
      }
      for (let i = from; i < from + keep.length; i++) this.unwrittenChars += (this.queue[i] as string).length;
      this.head = this.confirmed;
    }
    // Producers stay held (whenBelow) until the next connection; their longest wait starts then.
    for (const waiter of this.belowWaiters) clearTimeout(waiter.timer);
    this.wakeBelow();
    this.resolveDrained();
  }

  /** Queues stanzas; `tags` (one per stanza) makes them durable: written again until confirmed. */
  push(stanzas: string[], tags?: { seq: number; firstIndex: number }): void {
    for (let i = 0; i < stanzas.length; i++) {
      this.queue.push(stanzas[i] as string);
      this.unwrittenChars += (stanzas[i] as string).length;
      this.tagSeq.push(tags ? tags.seq : NONE);
      this.tagIndex.push(tags ? tags.firstIndex + i : 0);
    }
    const excess = this.pending - this.limit;
    if (excess > 0) this.dropOldestUnsent(excess);
    this.schedule();
  }

  private dropOldestUnsent(excess: number): void {
    const from = this.head - this.base;
    const count = Math.min(excess, this.queue.length - from);
    if (count <= 0) return;
    for (const stanza of this.queue.splice(from, count)) this.unwrittenChars -= stanza.length;
    const seqs = this.tagSeq.splice(from, count);
    const indexes = this.tagIndex.splice(from, count);
    this.dropped += count;
    const tags: DurableTag[] = [];
    seqs.forEach((seq, i) => seq !== NONE && tags.push({ seq, index: indexes[i] as number }));
    if (tags.length > 0) this.options.onDropped?.(tags);
    this.log.warn('outbox full: dropped oldest notifications', { dropped: count, limit: this.limit });
  }

  /**
   * Resolves when everything queued has been routed by the server (or at once when detached: it
   * then waits in the queue, and in the journal when durable).
   */
  drained(): Promise<void> {
    if (this.end === this.routed || !this.socket) return Promise.resolve();
    return new Promise((resolve) => this.drainedWaiters.push(resolve));
  }

  /**
   * Takes an incoming stanza if it is one of our barriers coming back (result, error or the
   * request itself, as routed by the server): true when it was, and must not be handled further.
   */
  acknowledge(stanza: Element): boolean {
    if (stanza.name !== 'iq' || this.barrierJid === undefined) return false;
    const id = stanza.attrs.id as string | undefined;
    if (!id?.startsWith(BARRIER_PREFIX) || stanza.attrs.from !== this.barrierJid) return false;
    const at = this.barriers.findIndex((b) => b.id === id);
    if (at === -1) {
      this.options.relay?.(stanza); // another member's, or from an earlier stream
      return true;
    }
    const { position } = this.barriers[at] as { position: number };
    this.barriers.splice(0, at + 1); // older ones cover less: done with them too
    if (this.barriers.length === 0) clearTimeout(this.overdueTimer);
    this.route(position);
    this.schedule(); // what was written meanwhile gets the next barrier
    return true;
  }

  /**
   * Confirms everything the server has routed without waiting for it to settle: for a deliberate
   * stop, when the server is not going away (src/component/connection.ts).
   */
  settle(): void {
    this.settling = [];
    clearTimeout(this.settleTimer);
    this.confirm(this.routed);
  }

  /** A barrier came back: everything before `position` is routed; it is confirmed once settled. */
  private route(position: number): void {
    if (position <= this.routed) return;
    const last = this.lastDurable(this.routed, position);
    this.sent += position - this.routed;
    this.routed = position;
    if (last && this.settleMs > 0) this.options.onRouted?.(last);
    if (this.settleMs <= 0) this.confirm(position);
    else {
      this.settling.push({ position, at: Date.now() });
      if (this.settling.length === 1) this.armSettle();
    }
    this.resolveDrained();
  }

  private armSettle(): void {
    const oldest = this.settling[0];
    if (!oldest) return;
    this.settleTimer = setTimeout(() => {
      const now = Date.now();
      let position: number | undefined;
      while (this.settling.length > 0 && now - (this.settling[0] as { at: number }).at >= this.settleMs) position = this.settling.shift()?.position;
      if (position !== undefined) this.confirm(position);
      this.armSettle();
    }, Math.max(0, oldest.at + this.settleMs - Date.now()));
    this.settleTimer.unref();
  }

  /**
   * A barrier is due: written stanzas are unconfirmed, and no barrier is in flight that may still
   * come back (none, or the newest is overdue).
   */
  private get barrierOwed(): boolean {
    if (this.barrierJid === undefined || this.head <= this.routed) return false;
    const newest = this.barriers.at(-1);
    return newest === undefined || newest.overdue;
  }

  /** Stanzas to write, or a barrier owed for written ones. */
  private get work(): boolean {
    return this.head < this.end || this.barrierOwed;
  }

  private confirm(position: number): void {
    if (position <= this.confirmed) return;
    if (position > this.routed) {
      this.sent += position - this.routed;
      this.routed = position;
    }
    const last = this.lastDurable(this.confirmed, position);
    // The confirmed stanzas are never written again: let their text go now. The array itself is
    // trimmed below only in large steps; until then it kept up to 4 096 confirmed stanzas alive,
    // which with 95 KiB notification digests was ~400 MiB of heap (a first sync of 100 000
    // documents with digests peaked at 569 MiB RSS; heap snapshot: the strings hung off `queue`).
    for (let i = this.confirmed - this.base; i < position - this.base; i++) this.queue[i] = '';
    this.confirmed = position;
    if (last) this.options.onConfirmed?.(last);
    const done = this.confirmed - this.base;
    if (done > 4096 && done * 2 > this.queue.length) {
      this.queue = this.queue.slice(done);
      this.tagSeq = this.tagSeq.slice(done);
      this.tagIndex = this.tagIndex.slice(done);
      this.base = this.confirmed;
    }
    this.resolveDrained();
  }

  /** The newest durable stanza in absolute positions [from, to), if any. */
  private lastDurable(from: number, to: number): DurableTag | undefined {
    for (let p = to - 1; p >= from; p--) {
      const i = p - this.base;
      if (this.tagSeq[i] !== NONE) return { seq: this.tagSeq[i] as number, index: this.tagIndex[i] as number };
    }
    return undefined;
  }

  private resolveDrained(): void {
    if (this.end !== this.routed && this.socket) return;
    if (this.pending === 0) {
      this.queue = [];
      this.tagSeq = [];
      this.tagIndex = [];
      this.base = this.confirmed;
    }
    const waiters = this.drainedWaiters;
    this.drainedWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private schedule(): void {
    if (this.scheduled || !this.socket || this.waitingDrain || !this.work) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const socket = this.socket;
    while (socket && this.socket === socket && !this.waitingDrain && this.work) {
      let chunk = '';
      while (this.head < this.end && chunk.length < this.chunkBytes) chunk += this.queue[this.head++ - this.base];
      this.unwrittenChars -= chunk.length;
      if (this.barrierJid === undefined) this.confirm(this.head);
      else if (this.barrierOwed) {
        const id = `${BARRIER_PREFIX}${this.options.barrierTag ? `${this.options.barrierTag}.` : ''}${(this.barrierCounter++).toString(36)}`;
        if (this.barriers.length > 0) this.log.warn('confirmation barrier overdue: writing another', { overdue: this.barriers.length, timeoutMs: this.barrierTimeoutMs });
        const barrier = { id, position: this.head, overdue: false };
        this.barriers.push(barrier);
        clearTimeout(this.overdueTimer);
        // Marked by its own timer, not by comparing Date.now(): a timer may fire a millisecond
        // early, and a barrier then judged not yet overdue was never looked at again.
        this.overdueTimer = setTimeout(() => {
          barrier.overdue = true;
          this.schedule();
        }, this.barrierTimeoutMs);
        this.overdueTimer.unref();
        this.barriersSent++;
        chunk += barrierIq(id, this.barrierJid);
      }
      this.write(socket, chunk);
    }
    this.wakeBelow();
  }

  /** Writes a chunk; when the socket pushes back, waits for 'drain' before writing more. */
  private write(socket: OutboxSocket, chunk: string): void {
    if (socket.write(chunk)) return;
    this.waitingDrain = true;
    const onDrain = (): void => {
      socket.removeListener('drain', onDrain);
      socket.removeListener('close', onDrain);
      if (this.socket !== socket) return;
      this.waitingDrain = false;
      this.schedule();
    };
    socket.once('drain', onDrain);
    socket.once('close', onDrain);
  }
}

/** A barrier: a ping from the component to itself. */
function barrierIq(id: string, jid: string): string {
  return `<iq type="get" id="${id}" from="${jid}" to="${jid}"><ping xmlns="urn:xmpp:ping"/></iq>`;
}
