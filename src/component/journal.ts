// The notification journal: what makes queued notifications survive a Hermod restart or crash.
// One append-only file, dataDir/outbox.journal, of JSON lines:
//   {"q":seq,"e":event,"r":recipients}   an event to deliver (written once per event, before
//                                        the request that caused it is answered)
//   {"a":seq,"i":index}                   the server has taken every notification up to
//                                        recipient `index` of event `seq` (and all before)
//   {"x":seq,"f":from,"t":to}             recipients [from, to) of event `seq` were dropped
//   {"w":seq,"i":index}                   written to the socket up to there, not yet confirmed
//                                        (w -1: the connection was lost, they will be written
//                                        again). After a crash, written counts as delivered:
//                                        a kill -9 does not take back what the kernel has.
// Writes are synchronous appends (one write(2) each, like the store's writes they reach the OS
// before the reply is sent: a kill -9 loses nothing, a power loss may). When every event has
// been confirmed and the file has grown past `compactBytes`, it is truncated. On open, the
// events not confirmed are handed back for delivery.
//
// Why a journal and not per-subscription watermarks: a watermark per subscription costs one
// write per recipient per event (a 1 000-subscriber node: 1 000 writes per publish); the journal
// costs one append per event (the event once plus its recipient list) and one small ack per
// written chunk of notifications (≈64 KiB), whatever the fan-out.

import { closeSync, fstatSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.ts';
import type { Recipient, ServiceEvent } from '../pubsub/types.ts';
import type { DurableTag } from './outbox.ts';

export interface JournalEvent {
  seq: number;
  event: ServiceEvent;
  recipients: Recipient[];
  /** Recipients (indexes into `recipients`) still to be delivered, in order. */
  pending: number[];
}

export const JOURNAL_FILE = 'outbox.journal';

export class NotificationJournal {
  private fd: number;
  private size: number;
  private nextSeq: number;
  private readonly compactBytes: number;

  private constructor(
    readonly file: string,
    fd: number,
    size: number,
    nextSeq: number,
    private readonly log: Logger,
    compactBytes: number,
  ) {
    this.fd = fd;
    this.size = size;
    this.nextSeq = nextSeq;
    this.compactBytes = compactBytes;
  }

  /** Opens (creating) the journal in `dir`; resolves to it and the events not yet delivered. */
  static open(dir: string, log: Logger, compactBytes = 4 * 1024 * 1024): { journal: NotificationJournal; undelivered: JournalEvent[] } {
    const file = path.join(dir, JOURNAL_FILE);
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const { events, maxSeq } = replay(text, log);
    const fd = openSync(file, 'a', 0o600);
    const journal = new NotificationJournal(file, fd, fstatSync(fd).size, maxSeq + 1, log, compactBytes);
    if (events.length === 0 && journal.size > 0) journal.truncate();
    return { journal, undelivered: events };
  }

  /** Records an event and its recipients; returns its sequence number. */
  append(event: ServiceEvent, recipients: Recipient[]): number {
    const seq = this.nextSeq++;
    this.write(`${JSON.stringify({ q: seq, e: event, r: recipients })}\n`);
    return seq;
  }

  confirm(tag: DurableTag): void {
    this.write(`{"a":${tag.seq},"i":${tag.index}}\n`);
  }

  written(tag: DurableTag): void {
    this.write(`{"w":${tag.seq},"i":${tag.index}}\n`);
  }

  rewound(): void {
    this.write('{"w":-1,"i":-1}\n');
  }

  dropped(tags: DurableTag[]): void {
    let lines = '';
    for (let i = 0; i < tags.length; ) {
      const { seq, index } = tags[i] as DurableTag;
      let j = i + 1;
      while (j < tags.length && tags[j]?.seq === seq && tags[j]?.index === index + (j - i)) j++;
      lines += `{"x":${seq},"f":${index},"t":${index + (j - i)}}\n`;
      i = j;
    }
    if (lines) this.write(lines);
  }

  /** Everything recorded has been delivered: the file may start over. */
  allConfirmed(): void {
    if (this.size >= this.compactBytes) this.truncate();
  }

  get bytes(): number {
    return this.size;
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }

  private truncate(): void {
    ftruncateSync(this.fd, 0);
    this.size = 0;
  }

  private write(text: string): void {
    if (this.fd < 0) return; // closed: shutting down
    const buf = Buffer.from(text);
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd, buf, off);
    this.size += buf.length;
  }
}

/** Replays journal text: the events with recipients not yet confirmed nor dropped. */
export function replay(text: string, log: Logger): { events: JournalEvent[]; maxSeq: number } {
  const events = new Map<number, { seq: number; event: ServiceEvent; recipients: Recipient[]; skip: Array<[number, number]> }>();
  let ackSeq = -1;
  let ackIndex = -1;
  let writtenSeq = -1;
  let writtenIndex = -1;
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
      [writtenSeq, writtenIndex] = [rec.w, rec.i];
    } else if (typeof rec.x === 'number' && typeof rec.f === 'number' && typeof rec.t === 'number') {
      events.get(rec.x)?.skip.push([rec.f, rec.t]);
    } else bad++;
  }
  if (bad > 0) log.warn('notification journal: unreadable lines skipped', { lines: bad });
  if (writtenSeq > ackSeq || (writtenSeq === ackSeq && writtenIndex > ackIndex)) [ackSeq, ackIndex] = [writtenSeq, writtenIndex];
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
