// Bounced notifications (XEP-0060 §4.4): a message to a subscriber that comes back as an error
// saying the address cannot be reached is counted per JID; after `maxBounces` in a row, the first
// of them at least `windowMs` ago, the JID's subscriptions are ended. The window keeps a server
// that restarts (its domain unreachable for seconds or minutes, every notification meanwhile a
// remote-server-not-found) from costing its users their subscriptions, and a partner Hermod its
// live notifications until its next discovery. Anything else heard from the JID (a request, a
// message) resets its count, and so does a bounce a day or more after the one before (the
// address worked in between, as far as anyone can tell). Transient or ambiguous conditions are
// not counted: wait-type errors, recipient-unavailable, and service-unavailable (also what a
// server answers for a partner's Hermod component that is merely down for a while).

import type { Element } from 'ltx';
import { LRUCache } from 'lru-cache';
import { bareJid } from '../util/bare-jid.ts';
import { normalizeJid } from './jid.ts';

const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
/** Conditions that say the subscriber's address does not work (XEP-0060 §4.4, RFC 6120 §8.3.3). */
export const UNREACHABLE = new Set(['remote-server-not-found', 'remote-server-timeout', 'item-not-found', 'gone', 'jid-malformed']);

export interface BounceOptions {
  maxBounces: number;
  /** How long a JID keeps bouncing (ms from its first bounce in a row) before its subscriptions are ended (default 0). */
  windowMs?: number;
  /** The clock (ms since the epoch; default Date.now). */
  now?: () => number;
  /** Ends the JID's subscriptions; resolves to how many were ended. */
  unsubscribe(jid: string): Promise<number>;
  log: { info(msg: string, fields?: Record<string, unknown>): void; debug(msg: string, fields?: Record<string, unknown>): void; error(msg: string, fields?: Record<string, unknown>): void };
  onBounce?(condition: string): void;
  onUnsubscribed?(count: number): void;
}

/** A bounce this long after the one before starts a new count (ms: a day). */
const RESET_AFTER_MS = 24 * 3600_000;

export class BounceTracker {
  /** Bounces in a row per JID (how many, the first and the last, ms); made at the first bounce (a 100 000-entry LRU costs ~30 ms to allocate, at every start otherwise). */
  private counts: LRUCache<string, { count: number; first: number; last: number }> | undefined;
  unsubscribed = 0;

  constructor(private readonly options: BounceOptions) {}

  get tracked(): number {
    return this.counts?.size ?? 0;
  }

  /** A message of type error came back. */
  bounced(stanza: Element): void {
    const error = stanza.getChild('error');
    const condition = error?.getChildElements().find((c) => c.getNS() === STANZAS && c.name !== 'text')?.name ?? 'undefined-condition';
    this.options.onBounce?.(condition);
    const jid = normalizeJid((stanza.attrs.from as string | undefined) ?? '');
    if (!jid || !UNREACHABLE.has(condition) || error?.attrs.type === 'wait') {
      this.options.log.debug('message bounced', { from: stanza.attrs.from, condition });
      return;
    }
    this.counts ??= new LRUCache<string, { count: number; first: number; last: number }>({ max: 100_000 });
    const now = (this.options.now ?? Date.now)();
    const was = this.counts.get(jid);
    const fresh = !was || now - was.last >= RESET_AFTER_MS;
    const count = fresh ? 1 : was.count + 1;
    const first = fresh ? now : was.first;
    this.options.log.debug('notification bounced', { jid, condition, count, maxBounces: this.options.maxBounces, bouncingForMs: now - first });
    if (count < this.options.maxBounces || now - first < (this.options.windowMs ?? 0)) {
      this.counts.set(jid, { count, first, last: now });
      return;
    }
    this.counts.delete(jid);
    this.options.unsubscribe(jid).then(
      (n) => {
        this.unsubscribed += n;
        this.options.onUnsubscribed?.(n);
        this.options.log.info('subscriptions removed after repeated bounces', { jid, condition, bounces: count, subscriptions: n });
      },
      (err: unknown) => this.options.log.error('removing a bouncing subscription failed', { jid, err: String(err) }),
    );
  }

  /** Something other than an error came from this JID: it is reachable. */
  heard(from: string | undefined): void {
    if (!this.counts?.size || !from) return;
    const jid = normalizeJid(from);
    if (!jid) return;
    this.counts.delete(jid);
    this.counts.delete(bareJid(jid));
  }
}
