// Notification digests (XEP-0060 pubsub#digest, pubsub#digest_frequency): the windows of the
// subscriptions that asked for them. Per subscription (recipient JID, node, subids) a window opens
// with the first item notification after a quiet period — that one goes out at once (leading
// edge: a single edit is not delayed) — and lasts `digestMs`. Publications and retractions
// reaching the subscription inside it are held; when it ends they go out as ONE message (an
// <items/> with every <item/> and <retract/> in publish order) and the next window starts; a
// window that ends with nothing held closes (the next item is a leading edge again). A window
// that reaches `maxItems` items or `maxBytes` of payload is sent at once, and one that an item
// would take past `maxBytes` is sent before that item is added (a message stays well under the
// servers' stanza size limits; an item larger than the bound travels alone).
//
// This class only keeps the windows; durability is the NotificationQueue's (notification-queue.ts).

import type { DigestPart, Item, NotificationType, Recipient, ServiceEvent } from '../pubsub/types.ts';
import { packable } from '../xmpp/packed.ts';

/** Bounds of one digest message. */
export interface DigestLimits {
  /** Most publications and retracted ids in one digest. Default 200. */
  maxItems?: number;
  /** Most payload bytes (characters of serialized payloads, or of their base64 where they go packed) in one digest. Default 128 KiB. */
  maxBytes?: number;
}

/** Journal positions (event sequence, recipient index) a digest holds. */
export type HeldPosition = [seq: number, index: number];

/** A digest due: the event to record and send to `recipient`, and the positions it replaces (`held[k]` is where `event.events[k]` came from). */
export interface DueDigest {
  event: Extract<ServiceEvent, { kind: 'digest' }>;
  recipient: Recipient;
  held: HeldPosition[];
}

interface Window {
  node: string;
  jid: string;
  timer: NodeJS.Timeout;
  parts: DigestPart[];
  held: HeldPosition[];
  count: number;
  bytes: number;
  recipient?: Recipient;
  messageType?: NotificationType;
  archiveId?: string;
}

const DEFAULT_MAX_ITEMS = 200;
const DEFAULT_MAX_BYTES = 128 * 1024;
/** Bytes counted per part besides its payload (ids, element tags). */
const PART_OVERHEAD = 64;

/** Characters a payload takes in the recipient's notification: its serialized XML, or the base64 of its UTF-8 where it goes packed (src/xmpp/packed.ts). */
function travelling(item: Item, recipient: Recipient): number {
  return recipient.packed && packable(item) ? Math.ceil(Buffer.byteLength(item.payload, 'utf8') / 3) * 4 : item.payload.length;
}

/** An item notification that may be aggregated: a publication with its item, or a retraction. */
export function digestible(event: ServiceEvent): event is Extract<ServiceEvent, { kind: 'items' | 'retract' }> {
  return (event.kind === 'items' && event.item !== undefined && !event.delayed) || event.kind === 'retract';
}

/** What a digest carries of one aggregated notification (the journal rebuilds digests it stored by reference with it). */
export function digestPart(event: Extract<ServiceEvent, { kind: 'items' | 'retract' }>): DigestPart {
  if (event.kind === 'retract') return { retract: event.itemIds };
  const item = event.item as NonNullable<typeof event.item>;
  return { item: event.withPayload ? item : { ...item, payload: '' }, withPayload: event.withPayload };
}

export class DigestWindows {
  private readonly windows = new Map<string, Window>();
  /** node -> how many windows it has open. */
  private readonly nodes = new Map<string, number>();
  /** node \0 recipient JID -> the keys of its windows. */
  private readonly byRecipient = new Map<string, Set<string>>();
  private readonly maxItems: number;
  private readonly maxBytes: number;
  private closed = false;

  constructor(
    /** Called with a digest that is due (its window ended, or it reached a bound). */
    private readonly send: (due: DueDigest) => void,
    limits: DigestLimits = {},
  ) {
    this.maxItems = limits.maxItems ?? DEFAULT_MAX_ITEMS;
    this.maxBytes = limits.maxBytes ?? DEFAULT_MAX_BYTES;
  }

  /**
   * Offers one recipient's item notification. False: send it now (no digest asked for, or the
   * leading edge, which opens a window). True: held, at journal position `at`, until its digest is
   * due (possibly at once, through `send`, when this one fills it).
   */
  hold(event: Extract<ServiceEvent, { kind: 'items' | 'retract' }>, recipient: Recipient, at: HeldPosition): boolean {
    const digestMs = recipient.digestMs;
    const key = `${event.node}\0${recipient.jid}\0${recipient.subids?.join('\0') ?? recipient.subid}`;
    this.flushRecipient(event.node, recipient.jid, digestMs === undefined ? undefined : key);
    if (digestMs === undefined || this.closed) return false;
    const window = this.windows.get(key);
    if (!window) {
      this.open(key, event.node, recipient.jid, digestMs);
      return false;
    }
    const part = digestPart(event);
    const count = 'retract' in part ? part.retract.length : 1;
    const bytes = PART_OVERHEAD * count + ('item' in part ? travelling(part.item, recipient) : 0);
    if (window.parts.length > 0 && window.bytes + bytes > this.maxBytes) this.flush(window);
    window.parts.push(part);
    window.count += count;
    window.bytes += bytes;
    window.held.push(at);
    window.recipient = recipient;
    if (event.messageType !== undefined) window.messageType = event.messageType;
    if (event.archiveId !== undefined) window.archiveId = event.archiveId;
    if (window.count >= this.maxItems || window.bytes >= this.maxBytes) this.flush(window);
    return true;
  }

  /** Sends now what the windows of `node` hold (before a notification that must not overtake them). */
  flushNode(node: string): void {
    if (!this.nodes.has(node)) return;
    for (const window of this.windows.values()) if (window.node === node) this.flush(window);
  }

  /**
   * Sends now what `jid`'s windows of `node` hold other than the window `keep` (its subscription
   * turned digests off, or changed: a later item must not overtake the held ones).
   */
  flushRecipient(node: string, jid: string, keep?: string): void {
    if (!this.nodes.has(node)) return; // the common case: nothing of this node held (no string built per recipient)
    const keys = this.byRecipient.get(`${node}\0${jid}`);
    if (!keys) return;
    for (const key of [...keys]) {
      if (key === keep) continue;
      const window = this.windows.get(key);
      if (!window) continue;
      // That subscription no longer aggregates (or was replaced): its window closes.
      clearTimeout(window.timer);
      this.flush(window);
      this.forget(key, window);
    }
  }

  private forget(key: string, window: Window): void {
    this.windows.delete(key);
    const open = (this.nodes.get(window.node) ?? 1) - 1;
    if (open > 0) this.nodes.set(window.node, open);
    else this.nodes.delete(window.node);
    const owner = `${window.node}\0${window.jid}`;
    const keys = this.byRecipient.get(owner);
    keys?.delete(key);
    if (keys?.size === 0) this.byRecipient.delete(owner);
  }

  /** Sends everything held and holds nothing more (stop): later notifications go out at once. */
  close(): void {
    this.closed = true;
    for (const window of this.windows.values()) {
      clearTimeout(window.timer);
      this.flush(window);
    }
    this.windows.clear();
    this.nodes.clear();
    this.byRecipient.clear();
  }

  /** Positions held in all windows (for status and tests). */
  get held(): number {
    let n = 0;
    for (const window of this.windows.values()) n += window.held.length;
    return n;
  }

  private open(key: string, node: string, jid: string, digestMs: number): void {
    const window: Window = { node, jid, timer: undefined as unknown as NodeJS.Timeout, parts: [], held: [], count: 0, bytes: 0 };
    const tick = (): void => {
      if (window.parts.length === 0) {
        this.forget(key, window); // quiet for a whole interval: the next item is a leading edge
        return;
      }
      this.flush(window);
      window.timer = setTimeout(tick, digestMs).unref();
    };
    window.timer = setTimeout(tick, digestMs).unref();
    this.windows.set(key, window);
    this.nodes.set(node, (this.nodes.get(node) ?? 0) + 1);
    const owner = `${node}\0${jid}`;
    this.byRecipient.set(owner, (this.byRecipient.get(owner) ?? new Set()).add(key));
  }

  private flush(window: Window): void {
    if (window.parts.length === 0 || !window.recipient) return;
    const { subids, subid, jid, packed } = window.recipient;
    const event: DueDigest['event'] = {
      kind: 'digest',
      node: window.node,
      events: window.parts,
      ...(window.messageType !== undefined ? { messageType: window.messageType } : {}),
      // The newest archive id: a subscriber resuming the node's history goes on after all of them.
      ...(window.archiveId !== undefined ? { archiveId: window.archiveId } : {}),
    };
    const held = window.held;
    window.parts = [];
    window.held = [];
    window.count = 0;
    window.bytes = 0;
    delete window.archiveId;
    this.send({ event, recipient: { jid, subid, ...(subids ? { subids } : {}), ...(packed ? { packed } : {}) }, held });
  }
}
