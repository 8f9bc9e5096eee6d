// The notification journal: what makes queued notifications survive a Hermod restart or crash,
// and, with several Hermods on one store, the death of the process that queued them. It lives in
// the store's state space 'journal' (Store.state), one journal per cluster member
// (src/cluster/cluster.ts; 'local' on a store only one process uses):
//   e\0<member>\0<seq: 12 hex>           {"e":event,"r":recipients}: an event to deliver (written
//                                        once per event, before the request that caused it is
//                                        answered: `durable()`). A digest (one recipient) is
//                                        written by reference, {"e":{"kind":"digest","node",
//                                        "refs":[seq…]},"r":[recipient]}: its items are those of
//                                        the events it replaces, kept in the store (past the
//                                        marks if need be) until the digest is confirmed — so a
//                                        window's payloads are stored once, not once more per
//                                        digest subscriber.
//   m\0<member>                          {"a":[seq,i],"r":[seq,i]}: a = confirmed: the server has
//                                        taken every notification up to recipient i of event seq
//                                        (and all before) and kept it while the stream stayed up;
//                                        r = routed up to there (a barrier came back), not yet
//                                        settled. After a crash of this process, routed counts as
//                                        delivered (the server delivers it without us); what was
//                                        only written to the socket does not (a kill -9 resets the
//                                        connection and the kernel discards what it had not sent:
//                                        src/component/outbox.ts): it is delivered again, at least
//                                        once. When the connection is lost r falls back to a (a
//                                        server going away may drop what it routed). The key also
//                                        lists the members that have a journal. An older Hermod's
//                                        {"a","w"} (w: written) is read as {"a"}: at least once.
//   x\0<member>\0<seq>\0<from: 8 hex>    `to`: recipients [from, to) of event seq were dropped
// Writes are grouped: everything recorded in one turn of the event loop goes in one store batch
// (one LevelDB batch, one `_bulk_docs`), one batch in flight at a time. A batch the store refuses
// is tried again, RETRY_FIRST_MS later, doubling up to RETRY_MAX_MS, while Hermod runs; close()
// waits CLOSE_WAIT_MS at most for the last writes, then stops without them and logs what they
// were (what is lost, what will be sent again): stopping never hangs on a store that is down.
// The routed mark is recorded with the next batch and not waited for: a crash before it is in the
// store only sends a little more again. Events are deleted
// once confirmed. On open, the member's own leftovers (a restart with the same member id) and an
// older Hermod's dataDir/outbox.journal file (imported once, renamed *.imported) are handed back.
// `adopt(member)` takes over a dead member's undelivered events (re-recorded as this member's,
// its keys deleted, in one batch).
//
// Why a journal and not per-subscription watermarks: a watermark per subscription costs one
// write per recipient per event (a 1 000-subscriber node: 1 000 writes per publish); the journal
// costs one entry per event (the event once plus its recipient list) and one small mark per
// routed chunk of notifications (one per barrier round trip), whatever the fan-out.

import { existsSync } from 'node:fs';
import { readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.ts';
import type { DigestPart, Recipient, ServiceEvent } from '../pubsub/types.ts';
import type { StateOp, StateSpace } from '../store/store.ts';
import { digestible, digestPart } from './digest.ts';
import type { DurableTag } from './outbox.ts';

export interface JournalEvent {
  seq: number;
  event: ServiceEvent;
  recipients: Recipient[];
  /** Recipients (indexes into `recipients`) still to be delivered, in order. */
  pending: number[];
}

/** The file an older Hermod kept its journal in, under dataDir (imported once). */
export const JOURNAL_FILE = 'outbox.journal';
export const JOURNAL_SPACE = 'journal';

const SEP = '\0';
const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');
const eventKey = (member: string, seq: number): string => `e${SEP}${member}${SEP}${hex(seq, 12)}`;
const marksKey = (member: string): string => `m${SEP}${member}`;
const dropKey = (member: string, seq: number, from: number): string => `x${SEP}${member}${SEP}${hex(seq, 12)}${SEP}${hex(from, 8)}`;

type Position = [number, number];
type DigestEvent = Extract<ServiceEvent, { kind: 'digest' }>;
/** A digest as stored: the sequence numbers of the events whose items it carries, in order. */
type DigestByReference = Omit<DigestEvent, 'events'> & { refs: number[] };
type StoredEvent = ServiceEvent | DigestByReference;
const byReference = (e: StoredEvent): e is DigestByReference => e.kind === 'digest' && Array.isArray((e as Partial<DigestByReference>).refs);
interface Marks {
  a: Position;
  r: Position;
}
const after = (p: Position, q: Position): boolean => p[0] > q[0] || (p[0] === q[0] && p[1] > q[1]);
/** Wait before the second try of a batch the store refused, doubled each try up to RETRY_MAX_MS (ms). */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 30_000;
/** Longest wait of close() for the last writes (ms). */
export const CLOSE_WAIT_MS = 5_000;

export class NotificationJournal {
  private nextSeq = 0;
  private marks: Marks = { a: [-1, -1], r: [-1, -1] };
  private marksDirty = false;
  /** Events not yet fully confirmed: seq -> recipient count and the drop keys written for it (ascending seqs). */
  private readonly live = new Map<number, { count: number; drops: string[] }>();
  private queued = new Map<string, StateOp>();
  /** Called once the batch that carries what they wait for is written (no argument) or given up. */
  private waiters: Array<(failure?: Error) => void> = [];
  /**
   * Recipient positions a digest window holds back (hold/release), oldest first (positions are
   * held in the order they are recorded): the marks stop before the oldest.
   */
  private readonly held = new Map<string, Position>();
  /** seq -> how many unconfirmed digests refer to that event (it is kept in the store until none does). */
  private readonly pins = new Map<number, number>();
  /** Digest seq -> the events it refers to (unpinned when it is confirmed). */
  private readonly refsOf = new Map<number, number[]>();
  /** Events the marks have passed that are kept for a digest still to be confirmed. */
  private readonly passedPinned = new Set<number>();
  private inflight: Promise<void> | undefined;
  private scheduled = false;
  private closed = false;
  /** Stopped without its last writes (close() ran out of time): the retries end. */
  private abandoned = false;
  /** The batch in flight (for what close() reports when it cannot wait for it). */
  private inflightOps: StateOp[] = [];
  private inflightWaiters: Array<(failure?: Error) => void> = [];
  /** Wakes the pause between two tries (close() gives up). */
  private wake: (() => void) | undefined;

  private constructor(
    private readonly space: StateSpace,
    readonly member: string,
    private readonly log: Logger,
  ) {}

  /**
   * Opens `member`'s journal in `space`; resolves to it and the events not yet delivered: its own
   * leftovers and, with `legacyDir`, an older Hermod's outbox.journal there (then renamed
   * outbox.journal.imported). Rejects with the store's error, or when `signal` aborts while the
   * store refuses the opening writes (they are retried until then).
   */
  static async open(space: StateSpace, member: string, log: Logger, options: { legacyDir?: string; signal?: AbortSignal } = {}): Promise<{ journal: NotificationJournal; undelivered: JournalEvent[] }> {
    const journal = new NotificationJournal(space, member, log);
    // A start stopped (SIGTERM) while the store refuses the opening writes gives them up: the
    // retries would otherwise keep the process alive until SIGKILL. Nothing was lost: what the
    // journal holds stays in the store for the next start.
    const giveUp = (): void => {
      journal.abandoned = true;
      journal.wake?.();
    };
    options.signal?.addEventListener('abort', giveUp, { once: true });
    try {
      if (options.signal?.aborted) throw new Error('notification journal: start-up stopped before it opened');
      for await (const [key] of space.range(`e${SEP}${member}${SEP}`)) journal.nextSeq = Math.max(journal.nextSeq, parseInt(key.slice(key.lastIndexOf(SEP) + 1), 16) + 1);
      const undelivered = await journal.adopt(member);
      if (options.legacyDir) undelivered.push(...(await journal.importFile(path.join(options.legacyDir, JOURNAL_FILE))));
      journal.marksDirty = true;
      await journal.durable();
      return { journal, undelivered };
    } finally {
      options.signal?.removeEventListener('abort', giveUp);
    }
  }

  /** The members that have a journal in `space` (this one included). */
  static async members(space: StateSpace): Promise<string[]> {
    const out: string[] = [];
    for await (const [key] of space.range(`m${SEP}`)) out.push(key.slice(2));
    return out;
  }

  /** Records an event and its recipients (durable with the next batch: `durable()`); returns its sequence number. */
  append(event: ServiceEvent, recipients: Recipient[]): number {
    const seq = this.nextSeq++;
    this.live.set(seq, { count: recipients.length, drops: [] });
    this.queue({ type: 'put', key: eventKey(this.member, seq), value: JSON.stringify({ e: event, r: recipients }) });
    return seq;
  }

  /**
   * Records a digest for `recipient` (durable with the next batch) by reference: `refs[k]` is the
   * sequence number of the event `event.events[k]` was made from (a position this journal holds
   * for it, not yet released). Those events stay in the store until the digest is confirmed; a
   * restart rebuilds the digest from them. Falls back to storing the parts themselves when the
   * references do not match (then nothing is pinned). Returns the digest's sequence number.
   */
  appendDigest(event: DigestEvent, recipient: Recipient, refs: number[]): number {
    if (refs.length !== event.events.length || !refs.every((ref) => this.live.has(ref))) return this.append(event, [recipient]);
    const seq = this.nextSeq++;
    this.live.set(seq, { count: 1, drops: [] });
    this.refsOf.set(seq, refs);
    for (const ref of refs) this.pins.set(ref, (this.pins.get(ref) ?? 0) + 1);
    const { events: _parts, ...rest } = event;
    const stored: DigestByReference = { ...rest, refs };
    this.queue({ type: 'put', key: eventKey(this.member, seq), value: JSON.stringify({ e: stored, r: [recipient] }) });
    return seq;
  }

  /**
   * Recipient `index` of event `seq` is not sent yet although later ones are (a digest window
   * holds it: src/component/notification-queue.ts): until `release`, the confirmed and routed
   * marks stay before it, so that a restart delivers it (and what follows it again: at least once).
   * Positions must be held in the order they were recorded.
   */
  hold(seq: number, index: number): void {
    this.held.set(`${seq}:${index}`, [seq, index]);
  }

  /** A held position is now covered by an event of its own (the digest, recorded before this call). */
  release(seq: number, index: number): void {
    this.held.delete(`${seq}:${index}`);
  }

  /** `tag`, or the position just before the oldest held one when that is earlier. */
  private capped(tag: DurableTag): DurableTag {
    const oldest = this.held.values().next().value;
    if (oldest === undefined) return tag;
    const before: Position = [oldest[0], oldest[1] - 1];
    return after([tag.seq, tag.index], before) ? { seq: before[0], index: before[1] } : tag;
  }

  /** The server has taken everything up to `tag` (except held positions): confirmed events are deleted. */
  confirm(confirmed: DurableTag): void {
    const tag = this.capped(confirmed);
    if (after([tag.seq, tag.index], this.marks.a)) this.marks.a = [tag.seq, tag.index];
    if (after(this.marks.a, this.marks.r)) this.marks.r = this.marks.a;
    this.marksDirty = true;
    for (const [seq, { count, drops }] of this.live) {
      if (seq > tag.seq || (seq === tag.seq && tag.index < count - 1)) break;
      this.live.delete(seq);
      for (const key of drops) this.queue({ type: 'del', key });
      // A digest not yet confirmed carries its items: the event stays until it is.
      if (this.pins.has(seq)) this.passedPinned.add(seq);
      else this.queue({ type: 'del', key: eventKey(this.member, seq) });
      const refs = this.refsOf.get(seq);
      if (refs) {
        this.refsOf.delete(seq);
        for (const ref of refs) this.unpin(ref);
      }
    }
    this.schedule();
  }

  /** One digest that referred to event `seq` is confirmed: the event goes once nothing needs it. */
  private unpin(seq: number): void {
    const left = (this.pins.get(seq) ?? 1) - 1;
    if (left > 0) {
      this.pins.set(seq, left);
      return;
    }
    this.pins.delete(seq);
    if (this.passedPinned.delete(seq)) this.queue({ type: 'del', key: eventKey(this.member, seq) });
  }

  /**
   * The server has routed everything up to `tag` (except held positions), not yet settled: after
   * a crash of this process it counts as delivered (recorded with the next batch, not waited for).
   */
  routed(routed: DurableTag): void {
    const tag = this.capped(routed);
    if (!after([tag.seq, tag.index], this.marks.r)) return;
    this.marks.r = [tag.seq, tag.index];
    this.marksDirty = true;
    this.schedule();
  }

  /** The connection was lost: what was routed and not confirmed will be written again (and, after a crash, delivered again). */
  rewound(): void {
    this.marks.r = this.marks.a;
    this.marksDirty = true;
    this.schedule();
  }

  /** These recipients were dropped (the outbox was full): never delivered. */
  dropped(tags: DurableTag[]): void {
    for (let i = 0; i < tags.length; ) {
      const { seq, index } = tags[i] as DurableTag;
      let j = i + 1;
      while (j < tags.length && tags[j]?.seq === seq && tags[j]?.index === index + (j - i)) j++;
      const key = dropKey(this.member, seq, index);
      this.live.get(seq)?.drops.push(key);
      this.queue({ type: 'put', key, value: String(index + (j - i)) });
      i = j;
    }
  }

  /** Events recorded since start (a request that changes it caused notifications). */
  get recorded(): number {
    return this.nextSeq;
  }

  /** Events recorded and not yet confirmed. */
  get size(): number {
    return this.live.size;
  }

  /** Resolves once everything recorded so far is in the store (retries while the store fails); rejects when close() gave up on it. */
  durable(): Promise<void> {
    const nothingQueued = this.queued.size === 0 && !this.marksDirty;
    if (nothingQueued && !this.inflight) return Promise.resolve();
    // Nothing queued: what was recorded is in the batch in flight, whose waiters are inflightOps' own.
    const waiters = nothingQueued ? this.inflightWaiters : this.waiters;
    const done = new Promise<void>((resolve, reject) => waiters.push((failure) => (failure ? reject(failure) : resolve())));
    this.schedule();
    return done;
  }

  /**
   * Takes over `member`'s undelivered events (a dead member's, or this member's own from before a
   * restart): re-recorded as this member's, the old keys deleted, in one batch. Resolves to them
   * (for NotificationQueue.restore) once durable. Rejects with the store's error.
   */
  async adopt(member: string): Promise<JournalEvent[]> {
    const space = this.space;
    const raw = await space.get(marksKey(member));
    const stored = raw ? (JSON.parse(raw) as Partial<Marks>) : {};
    const none: Position = [-1, -1];
    const marks: Marks = { a: stored.a ?? none, r: stored.r ?? stored.a ?? none };
    const done = after(marks.r, marks.a) ? marks.r : marks.a;
    const skips = new Map<number, Array<[number, number]>>();
    for await (const [key, to] of space.range(`x${SEP}${member}${SEP}`)) {
      const [, , seq, from] = key.split(SEP);
      const seqN = parseInt(seq as string, 16);
      skips.set(seqN, [...(skips.get(seqN) ?? []), [parseInt(from as string, 16), Number(to)]]);
      this.queue({ type: 'del', key });
    }
    const out: JournalEvent[] = [];
    let events = 0;
    let routed = 0;
    // The events a digest stored by reference may refer to (always earlier ones of the member).
    const referable = new Map<number, ServiceEvent>();
    for await (const [key, value] of space.range(`e${SEP}${member}${SEP}`)) {
      const seq = parseInt(key.slice(key.lastIndexOf(SEP) + 1), 16);
      if (member !== this.member || !this.live.has(seq)) this.queue({ type: 'del', key });
      if (member === this.member && this.live.has(seq)) continue; // recorded since open: not a leftover
      events++;
      const { e: stored, r } = JSON.parse(value) as { e: StoredEvent; r: Recipient[] };
      const e = byReference(stored) ? this.rebuilt(stored, referable, member, seq) : stored;
      if (digestible(e)) referable.set(seq, e);
      if (e.kind === 'digest' && e.events.length === 0) continue; // nothing left to send (logged)
      const first = seq < done[0] ? r.length : seq === done[0] ? done[1] + 1 : 0;
      // Routed by the server, not yet settled: taken as delivered (see the header).
      const confirmed = seq < marks.a[0] ? r.length : seq === marks.a[0] ? marks.a[1] + 1 : 0;
      routed += Math.max(0, first - confirmed);
      const skip = skips.get(seq) ?? [];
      const recipients = r.filter((_, i) => i >= first && !skip.some(([f, t]) => i >= f && i < t));
      if (recipients.length === 0) continue;
      const mine = this.append(e, recipients);
      out.push({ seq: mine, event: e, recipients, pending: recipients.map((_, i) => i) });
    }
    if (member !== this.member) this.queue({ type: 'del', key: marksKey(member) });
    await this.durable();
    const resent = out.reduce((n, e) => n + e.recipients.length, 0);
    if (member !== this.member && (events > 0 || raw !== undefined)) this.log.info('notification journal of another member adopted', { member, events, undelivered: out.length, resent, routedUnconfirmed: routed });
    return out;
  }

  /** A digest stored by reference, with its parts again (a part whose event is gone is logged and left out). */
  private rebuilt(stored: DigestByReference, referable: Map<number, ServiceEvent>, member: string, seq: number): DigestEvent {
    const { refs, ...rest } = stored;
    const parts: DigestPart[] = [];
    for (const ref of refs) {
      const event = referable.get(ref);
      if (event && digestible(event)) parts.push(digestPart(event));
      else this.log.error('notification journal: a digest refers to an event the store does not have; its other parts are delivered', { member, seq, missing: ref, node: stored.node });
    }
    return { ...rest, events: parts };
  }

  /** Imports an older Hermod's journal file (then renamed *.imported); resolves to its undelivered events. */
  private async importFile(file: string): Promise<JournalEvent[]> {
    if (!existsSync(file)) return [];
    const { events } = replay(await readFile(file, 'utf8'), this.log);
    const out: JournalEvent[] = [];
    for (const { event, recipients, pending } of events) {
      const kept = pending.map((i) => recipients[i] as Recipient);
      out.push({ seq: this.append(event, kept), event, recipients: kept, pending: kept.map((_, i) => i) });
    }
    await this.durable();
    await rename(file, `${file}.imported`);
    this.log.info('notification journal file of an older Hermod imported into the store (once)', { from: file, undelivered: out.length });
    return out;
  }

  /**
   * Writes what is queued and stops; the member's journal key goes too when nothing is left to
   * deliver. Waits `waitMs` at most (default CLOSE_WAIT_MS) for the store to take the last writes;
   * then stops without them, logs at error level what they were (events lost, events that will be
   * sent again and from where) and rejects what still waits on durable(). Never rejects.
   */
  async close(waitMs = CLOSE_WAIT_MS): Promise<void> {
    if (this.closed) return;
    if (this.live.size === 0) this.queue({ type: 'del', key: marksKey(this.member) });
    this.marksDirty = this.live.size > 0 && this.marksDirty;
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([this.durable().then(() => true, () => true), new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), waitMs)))]);
    clearTimeout(timer);
    this.closed = true;
    if (!inTime) this.abandon(waitMs);
  }

  /** Gives up the writes the store has not taken (close() ran out of time): logs what they were. */
  private abandon(waitMs: number): void {
    this.abandoned = true;
    this.wake?.();
    const ops = [...this.inflightOps, ...this.queued.values()];
    const events = (type: StateOp['type']): number => ops.filter((op) => op.type === type && op.key.startsWith(`e${SEP}`)).length;
    this.log.error(
      `notification journal: the store did not take the last writes within ${waitMs} ms; stopping without them. ` +
        'Events not recorded are lost (their notifications were not sent; their requests were not answered). ' +
        `Delivered events not yet cleared, and whatever was delivered since the last recorded mark, will be sent again (same item ids) from the store's journal of member ${this.member}: by the next Hermod started with this member id, or by the cluster member that adopts it.`,
      { member: this.member, eventsNotRecorded: events('put'), deliveredNotCleared: events('del'), marksNotRecorded: ops.some((op) => op.key === marksKey(this.member)) || this.marksDirty, undeliveredInStore: this.live.size },
    );
    this.queued.clear();
    this.marksDirty = false;
  }

  private queue(op: StateOp): void {
    if (this.closed) return;
    this.queued.set(op.key, op);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.inflight || this.closed) return;
    if (this.queued.size === 0 && !this.marksDirty) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  /** One batch of everything queued; tried again, with growing pauses, until the store takes it or close() gives up. */
  private flush(): void {
    if (this.inflight || (this.queued.size === 0 && !this.marksDirty)) return;
    const ops = [...this.queued.values()];
    if (this.marksDirty && !(this.queued.get(marksKey(this.member))?.type === 'del')) ops.push({ type: 'put', key: marksKey(this.member), value: JSON.stringify(this.marks) });
    const waiters = this.waiters;
    this.queued = new Map();
    this.marksDirty = false;
    this.waiters = [];
    this.inflightOps = ops;
    this.inflightWaiters = waiters;
    this.inflight = (async () => {
      for (let attempt = 1, wait = RETRY_FIRST_MS; ; attempt++, wait = Math.min(RETRY_MAX_MS, wait * 2)) {
        try {
          await this.space.batch(ops);
          return;
        } catch (err) {
          if (this.abandoned) throw err;
          this.log.error('notification journal: store write failed, retrying', { reason: String(err), ops: ops.length, attempt, retryInMs: wait });
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, wait);
            this.wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.wake = undefined;
          if (this.abandoned) throw err;
        }
      }
    })().then(
      () => this.settled(waiters, undefined),
      (err: unknown) => this.settled(waiters, new Error(`notification journal stopped before the store took its writes: ${String(err)}`)),
    );
  }

  /** The batch in flight is done (or given up: `failure`): its waiters hear of it, the next batch may go. */
  private settled(waiters: Array<(failure?: Error) => void>, failure: Error | undefined): void {
    this.inflight = undefined;
    this.inflightOps = [];
    this.inflightWaiters = [];
    for (const settle of waiters) settle(failure);
    this.schedule();
  }
}

/** Replays an older Hermod's journal file: the events with recipients not yet confirmed nor dropped. */
export function replay(text: string, log: Logger): { events: JournalEvent[]; maxSeq: number } {
  const events = new Map<number, { seq: number; event: ServiceEvent; recipients: Recipient[]; skip: Array<[number, number]> }>();
  let ackSeq = -1;
  let ackIndex = -1;
  let maxSeq = -1;
  let bad = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    let rec: { q?: number; e?: ServiceEvent; r?: Recipient[]; a?: number; w?: number; i?: number; x?: number; f?: number; t?: number };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      bad++; // a line cut short by a power loss
      continue;
    }
    if (typeof rec.q === 'number' && rec.e && Array.isArray(rec.r)) {
      events.set(rec.q, { seq: rec.q, event: rec.e, recipients: rec.r, skip: [] });
      maxSeq = Math.max(maxSeq, rec.q);
    } else if (typeof rec.a === 'number' && typeof rec.i === 'number') {
      if (rec.a > ackSeq || (rec.a === ackSeq && rec.i > ackIndex)) [ackSeq, ackIndex] = [rec.a, rec.i];
    } else if (typeof rec.w === 'number' && typeof rec.i === 'number') {
      // A "written" mark: not proof of delivery (see the header), so those events are sent again.
      continue;
    } else if (typeof rec.x === 'number' && typeof rec.f === 'number' && typeof rec.t === 'number') {
      events.get(rec.x)?.skip.push([rec.f, rec.t]);
    } else bad++;
  }
  if (bad > 0) log.warn('notification journal: unreadable lines skipped', { lines: bad });
  const out: JournalEvent[] = [];
  for (const e of [...events.values()].sort((a, b) => a.seq - b.seq)) {
    if (e.seq < ackSeq) continue;
    const first = e.seq === ackSeq ? ackIndex + 1 : 0;
    const pending: number[] = [];
    for (let i = first; i < e.recipients.length; i++) if (!e.skip.some(([f, t]) => i >= f && i < t)) pending.push(i);
    if (pending.length > 0) out.push({ seq: e.seq, event: e.event, recipients: e.recipients, pending });
  }
  return { events: out, maxSeq };
}
