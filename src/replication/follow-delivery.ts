// What a followed partner node delivers, and how it reaches the sink: the catch-up when a node
// is followed (its current items, or its history since the saved position), its live
// notifications (each moves the node's history position once it and everything received before
// it were applied), and what happens when they cannot be applied at once — left to the node's
// history while the sink is behind and read back at the sink's pace (a drain), or read again
// when a write failed. PartnerManager (partners.ts) decides what is followed (discovery,
// subscriptions) and hands each notification of a followed node here; this module never
// subscribes or unsubscribes. Beside it: catch-up-rules.ts (what a catch-up takes of a page
// while notifications arrive), one-copy-follows.ts (notifications without payload).

import type { Element } from 'ltx';
import { IqError } from '../xmpp/iq-error.ts';
import type { Logger } from '../log.ts';
import { normalizeJid } from '../xmpp/jid.ts';
import { NS } from '../xmpp/ns.ts';
import type { HistoryPage, PubsubClient } from '../xmpp/pubsub-client.ts';
import { pageOfItems, stableAnchor, withoutSuperseded } from './catch-up-rules.ts';
import type { OneCopyFollows } from './one-copy-follows.ts';
import { StoppedError } from './stopped-error.ts';
import { RefusedWrite, writeLeaves, type PartnerSink } from '../sinks/sink.ts';
import type { ConfiguredSubscription } from './subscription-setup.ts';

/** Durable per-node position in a partner's history (XEP-0313 archive id). */
export interface HistoryPositions {
  get(service: string, node: string): Promise<string | undefined>;
  set(service: string, node: string, id: string): Promise<void>;
  /** The nodes of `service` with a position: those followed now or in an earlier run. */
  nodes?(service: string): Promise<string[]>;
}

/** Live notifications of one followed node, in arrival order, until they are applied. */
export interface LiveTrack {
  /** Archive ids (XEP-0359 stanza-id) of notifications not yet applied or not yet counted. */
  queue: Array<{ id: string; settled?: boolean; ok?: boolean }>;
  /** Catch-up under way: it moves the position itself; what live notifications reach meanwhile is saved after it. */
  catchingUp: boolean;
  /**
   * While catching up: each item id that a live event published or retracted since we
   * subscribed, with the ordinal (`arrivals`) of the first such event (current-items pages:
   * pageOfItems); and the archive ids (stanza-id) of the live events that have one. A catch-up
   * stops where it meets what certainly came after the subscription and skips what a live
   * event superseded.
   */
  liveItems?: Map<string, number>;
  liveSids?: Set<string>;
  /**
   * While a history replay catches up (replayHistory): the archive ids of the entries it has
   * taken, and the ids of the items touched by live events whose archive id it had not taken
   * when they arrived — events newer than every entry it takes before its stop, so those items'
   * entries are superseded. (An event whose entry was taken already lagged behind the history:
   * it supersedes nothing taken after it.)
   */
  taken?: Set<string>;
  supersedes?: Set<string>;
  /** Live events received while catching up (the next one's ordinal in `liveItems`). */
  arrivals: number;
  afterCatchUp?: string;
  /** Something received could not be applied: the position stays before it until the next catch-up. */
  held: boolean;
  /** Live events of this node being applied (handed to the sink, not yet settled). */
  inFlight: number;
  /**
   * A service without history, while the sink is behind: ids of items whose notifications were
   * not applied, read by id later at the sink's pace (leaveToReads); `reading` while that runs.
   */
  unread?: Set<string>;
  reading?: boolean;
  /** Notifications are left to the node's history (the sink fell behind): a drain replays them. */
  deferred?: boolean;
  /** A notification with archive id failed during a catch-up that could not leave it to the history: a drain starts once the catch-up ends (applyAgain). */
  drainAfterCatchUp?: boolean;
  /** During a catch-up: it has a restart point in the history, so notifications may be left (CatchUpStart.replayable). */
  replayable?: boolean;
  /** Position waiting to be written, and the write under way (writes are coalesced). */
  next?: string;
  saving?: Promise<void>;
}

/** A node we follow: our subscription (its options: subscription-setup.ts) and its live notifications. */
export interface Followed extends ConfiguredSubscription {
  live: LiveTrack;
  /** PayloadsSeen.now() when this follow began: what was notified before is not known. */
  since: number;
  /** When the service answered our subscribe (epoch ms); undefined until then. */
  subscribedAt?: number;
  /**
   * Items being read again (rereadItems): 0 while pending, 1 once a live event touched one since
   * (it is newer), 2 once such a newer event failed too (to be read again after the read under way).
   */
  rereads?: Map<string, number>;
}

/** Where a node's catch-up starts (see FollowDelivery.catchUpStart). */
export interface CatchUpStart {
  /** The saved history position: the catch-up replays the history after it. */
  position?: string;
  /** First follow: the newest history entry before we subscribed (undefined: the history was empty). */
  end?: string;
  /** Whether everything published after our subscription can be read back from the history. */
  replayable: boolean;
}


/** Most item ids one node keeps for reading later (leaveToReads): beyond, the node is followed afresh. */
const UNREAD_MAX = 100_000;
/** Attempts of a drain (see FollowDelivery.drain) before the node is followed afresh. */
const DRAIN_ATTEMPTS = 10;
/** Attempts of reading failed items again (rereadItems): at the discovery interval once backed off, days (300 s: 3.5 days). */
const REREAD_ATTEMPTS = 1000;
/** Entries per history (XEP-0313) page read by a catch-up or a drain. */
const HISTORY_PAGE = 100;
/** History pages in a row that came back before a node's smaller page size (historyPages) is doubled again. */
const PAGE_GROW_AFTER = 10;

/** Items per page of a catch-up from a node's current items. */
const ITEM_PAGE = 100;
/** Pages one catch-up from current items reads at most (10 million items), a bound on the loop. */
const CATCH_UP_PAGES = 100_000;
/** Times a catch-up asks a page again because its anchor was republished or retracted meanwhile. */
const ANCHOR_MOVES = 50;

/** What FollowDelivery needs of the partner manager: its requests, the sink, and what is followed now. */
export interface FollowDeliveryOptions {
  client: PubsubClient;
  sink: PartnerSink;
  log: Logger;
  /** Where history positions are remembered; without it a catch-up reads current items only and nothing is left to a history. */
  positions?: HistoryPositions;
  /** Most live items handed to the sink and not yet written, over every followed node (PartnerManagerOptions.liveBacklogItems). */
  backlogBound: number;
  /** First delay of a retried drain or re-read (ms), doubling up to `intervalMs`. */
  retryFirstMs: number;
  intervalMs: number;
  oneCopy: OneCopyFollows;
  /** The follow of `node` of `service` in force now (a drain or re-read of an earlier one ends). */
  followed(service: string, node: string): Followed | undefined;
  /** A drain gave up: `f` is no longer followed (followed again by a discovery; PartnerManager.forget). */
  forget(f: Followed): void;
  partnerOf(service: string): string | undefined;
  /** Whether `jid` is a partner (a service whose partner was removed is not). */
  isPartner(jid: string): boolean;
  /** Whether `service` keeps history on its nodes (XEP-0313). */
  withHistory(service: string): boolean;
  stopped(): boolean;
  /** Pauses or resumes delivery of `f`'s notifications (pubsub#deliver; not when another replication shares the subscription). */
  setDelivery(f: Followed, deliver: boolean): Promise<'taken' | 'refused' | 'unknown'>;
  /** Discovers `partner` again soon (a drain that gave up). */
  discoverSoon(partner: string): void;
}

export class FollowDelivery {
  /** Live items handed to the sink and not yet written, over every followed node (see leaveToHistory). */
  private backlog = 0;
  private readonly bound: number;
  /** Drains waiting for the backlog to fall (woken at every change, and by the manager's stop(): backlogChanged). */
  private backlogWaiters: Array<() => void> = [];
  /** Drains and re-reads under way (see drain, rereadItems), awaited by idle(). */
  private readonly drains = new Set<Promise<void>>();
  /**
   * Entries per history page of a node ("service\0node") whose page got no answer in time
   * (remote-server-timeout): halved each time, down to one, and doubled again (up to
   * HISTORY_PAGE) after PAGE_GROW_AFTER pages in a row that came back. A page of large items over
   * a slow link would otherwise time out at every try; a server that was merely down (other
   * conditions) changes nothing.
   */
  private readonly historyPages = new Map<string, { max: number; ok: number }>();

  constructor(private readonly o: FollowDeliveryOptions) {
    this.bound = o.backlogBound;
  }

  /** A task idle() waits for (it should not reject: a rejection is logged). */
  track(task: Promise<void>): void {
    const tracked = task.catch((err: unknown) => this.o.log.error('partner replication task failed', { reason: String(err) })).finally(() => this.drains.delete(tracked));
    this.drains.add(tracked);
  }

  /**
   * Resolves once the drains and re-reads under way have ended: call it once stopped() is true
   * and after backlogChanged(), which wakes the drains that wait for the backlog (they end at
   * their next step).
   */
  async idle(): Promise<void> {
    await Promise.all(this.drains);
  }

  /**
   * A live notification of followed node `f` (`event`, the pub/sub event of `message`, packed
   * payloads already unpacked): noted for a catch-up under way, left to the node's history while
   * the sink is behind (leaveToHistory), else applied; the history position moves once it and
   * everything received before it were applied (settle), and what failed is applied again
   * (applyAgain). Resolves to true at once when it was left to the history, else to false once
   * it is applied (or failed, and handed to applyAgain).
   */
  async deliver(f: Followed, message: Element, event: Element): Promise<boolean> {
    const { service: from, node } = f;
    const items = event.getChild('items');
    // The archive id the service gave this event (XEP-0359, `by` the service itself).
    const sid = message.getChildren('stanza-id', NS.SID).find((s) => normalizeJid(String(s.attrs.by ?? '')) === from)?.attrs.id as string | undefined;
    if (f.live.catchingUp) {
      const at = f.live.arrivals++;
      const touched = f.live.liveItems;
      const supersedes = sid !== undefined && f.live.taken?.has(sid) !== true ? f.live.supersedes : undefined;
      if (sid) f.live.liveSids?.add(sid);
      for (const child of items?.children ?? []) {
        if (typeof child === 'string' || (child.name !== 'item' && child.name !== 'retract') || child.attrs.id === undefined) continue;
        const id = String(child.attrs.id);
        if (!touched?.has(id)) touched?.set(id, at);
        supersedes?.add(id);
      }
    }
    // A purge has an archive id too: applied while later items are left, it would move the position past them.
    if (sid && (items || event.getChild('purge')) && this.leaveToHistory(f)) return true;
    if (items && this.leaveToReads(f, items)) return true;
    const entry = sid ? { id: sid } : undefined;
    if (entry) f.live.queue.push(entry);
    let waiting = 0;
    for (const child of items?.children ?? []) if (typeof child !== 'string') waiting++;
    this.backlog += waiting;
    f.live.inFlight++;
    if (f.rereads) for (const child of items?.children ?? []) if (typeof child !== 'string' && f.rereads.has(String(child.attrs.id))) f.rereads.set(String(child.attrs.id), 1);
    let ok = false;
    const failed = new Set<string>();
    try {
      ok = await this.applyEvent(from, node, event, failed);
    } finally {
      this.backlog -= waiting;
      f.live.inFlight--;
      this.backlogChanged();
    }
    if (entry) this.settle(f, entry, ok);
    if (!ok && failed.size > 0) this.applyAgain(f, sid, failed);
    return false;
  }

  /**
   * Where a catch-up starts, read before subscribing: the node's saved history position, or, on
   * a first follow of a node with history, the id of the newest history entry (undefined: none
   * yet). Everything published after that point is in the history after it, so notifications
   * left to the history during the catch-up (leaveToHistory) are read back by a drain that
   * starts there (`replayable`). A history that cannot be read: current items only. Rejects
   * (the follow is tried again) when reading the history's end got no answer — none in time, or
   * our own connection down: a first follow
   * read from current items saves no position, so what the partner deleted before the node's
   * first live notification would never be retracted here. Any error the service itself
   * answered still falls back to current items.
   */
  async catchUpStart(service: string, node: string): Promise<CatchUpStart> {
    const positions = this.o.positions && this.o.withHistory(service) ? this.o.positions : undefined;
    if (!positions) return { replayable: false };
    const position = await positions.get(service, node);
    if (position !== undefined) return { position, replayable: true };
    try {
      const end = await this.o.client.historyEnd(service, node);
      return { ...(end !== undefined ? { end } : {}), replayable: true };
    } catch (err) {
      // No answer (a timeout, our own connection down, the partner's server unreachable: our
      // server's remote-server-*): asked again. An error the partner's service answered, even a
      // "not now", falls back to current items (a partner whose archive keeps failing is still followed).
      if (err instanceof IqError && err.undecided && (err.stanza === undefined || err.condition.startsWith('remote-server-'))) throw err;
      this.o.log.warn('partner history not readable; catch-up reads current items only', { service, node, reason: String(err) });
      return { replayable: false };
    }
  }

  /**
   * What notifications missed. With a remembered position and a service that keeps history
   * (XEP-0313 on nodes), replays the node's history since then — publications and retractions,
   * in order, so deletions missed while offline arrive too; a replay that got no answer rejects
   * (the follow is tried again from the position). Otherwise, or when the service refuses the
   * history (IqError, decided: the position trimmed), reads the node's current items (RSM pages),
   * after noting the history's end as the position for next time.
   */
  async catchUp(service: string, node: string, f: Followed, start: CatchUpStart): Promise<void> {
    /** Every item applied, none skipped, no stop: notifications were left that no drain will read. */
    let readAll = false;
    let unapplied = false;
    const positions = this.o.positions && this.o.withHistory(service) ? this.o.positions : undefined;
    const { position } = start;
    this.o.log.debug('catching up', { service, node, history: positions !== undefined, position });
    if (positions && position !== undefined) {
      try {
        const { replayed, complete, retry } = await this.replayHistory(service, node, position, positions, f.live);
        if (complete || !retry) {
          // An entry the sink refused for itself (RefusedWrite; a sink without the XSLT stage, which
          // quarantines such leaves instead) holds the position: it is tried again at the next start.
          if (!complete) f.live.held = true;
          this.o.log.info('caught up with partner node from its history', { service, node, entries: replayed });
          return;
        }
        f.live.held = true;
        unapplied = true;
      } catch (err) {
        // No answer, a "not now" (IqError.undecided) or anything but an answer (the store of
        // positions failing): the follow fails and is tried again from the saved position. Reading
        // current items instead would move the position to the history's end, and what was
        // retracted since the position would never be retracted here.
        if (this.o.stopped() || !(err instanceof IqError) || err.undecided) throw err;
        this.o.log.warn('history replay refused; reading current items instead', { service, node, reason: String(err) });
        // No restart point before our subscription any more: no drain starts during this
        // catch-up, and what was already left is read as current items, to the end (a drain
        // reads what is left from here on from the history's end noted now; a retraction left
        // before it is lost, as in any catch-up from current items).
        f.live.replayable = false;
        if (f.live.deferred) readAll = true;
      }
      // Entries the sink could not write (the database down past its retries): the follow fails
      // and is tried again (from the position, which stayed before them) by a discovery.
      if (unapplied) throw new Error('history entries could not be written');
    }
    const end = position === undefined
      ? start.end
      : positions
        ? await this.o.client.historyEnd(service, node).catch((err: unknown) => {
            this.o.log.warn('partner history not readable; catch-up reads current items only', { service, node, reason: String(err) });
            return undefined;
          })
        : undefined;
    let count = 0;
    let superseded = 0;
    const partner = this.o.partnerOf(service);
    let reachedLive = false;
    const touched = f.live.liveItems; // the live events' touches, filled in as they arrive
    // Pages are asked for after an item (XEP-0059 `after`). An item republished or retracted
    // since we read it is no anchor: the service places "after" at its new place (the end of the
    // node) or finds no such item, and every item between would be skipped. So the anchor is the
    // last item read that no live event had touched when it was chosen (`anchors`, newest last),
    // and a page whose anchor a live event touched after it was asked for is asked for again
    // from an earlier anchor (from the start when none is left: what is read twice is written
    // twice, which the sinks take as a no-op).
    const anchors: string[] = [];
    let after: string | undefined;
    let moves = 0;
    // Live events received before the page under way was asked for (see pageOfItems).
    let askedAt = f.live.arrivals;
    const movedSinceAsked = (id: string): boolean => (touched?.get(id) ?? -1) >= askedAt;
    for (let pages = 0; ; pages++) {
      if (this.o.stopped()) throw new StoppedError();
      if (pages >= CATCH_UP_PAGES) throw new Error(`catch-up read ${CATCH_UP_PAGES} pages of ${node} without reaching its end`);
      let read: Element[] | undefined;
      try {
        read = (await this.o.client.itemsPage(service, node, { max: ITEM_PAGE, ...(after !== undefined ? { after } : {}) })).entries;
      } catch (err) {
        // item-not-found for an anchor retracted after we asked: asked again below.
        if (!(after !== undefined && err instanceof IqError && err.condition === 'item-not-found' && movedSinceAsked(after))) throw err;
      }
      if (this.o.stopped()) throw new StoppedError();
      if (after !== undefined && movedSinceAsked(after)) {
        if (++moves > ANCHOR_MOVES) throw new Error(`catch-up of ${node}: ${ANCHOR_MOVES} page anchors republished or retracted while being read`);
        after = stableAnchor(anchors, touched);
        askedAt = f.live.arrivals;
        continue;
      }
      const entries = read ?? [];
      const { page, reached, skipped } = pageOfItems(entries, readAll ? undefined : touched, askedAt);
      superseded += skipped;
      for (const item of entries) {
        const id = String(item.attrs.id);
        if (!touched?.has(id)) anchors.push(id);
      }
      if (anchors.length > 2 * ITEM_PAGE) anchors.splice(0, anchors.length - ITEM_PAGE);
      // Leaves the sink refused for themselves (RefusedWrite, each logged by it) are skipped: reading
      // the node again would only be refused again. Anything else fails the follow (tried again).
      const written = await writeLeaves(this.o.sink, page.map((item) => ({ service, node, item, ...(partner !== undefined ? { partner } : {}) }))).catch((err: unknown) => {
        if (!(err instanceof RefusedWrite)) throw err;
        this.o.log.warn('partner items refused by this site were skipped', { service, node, reason: String(err) });
        return [];
      });
      count += written.filter(Boolean).length;
      if (reached) {
        reachedLive = true;
        break;
      }
      if (entries.length === 0) break; // past the last item (a service may page fewer than asked)
      const last = String(entries.at(-1)?.attrs.id);
      after = touched?.has(last) ? stableAnchor(anchors, touched) : last;
      askedAt = f.live.arrivals; // the next page is asked for now
    }
    if (positions && end) await positions.set(service, node, end);
    this.o.log.info('caught up with partner node', { service, node, documents: count, ...(superseded > 0 ? { superseded } : {}), ...(reachedLive ? { reachedLive } : {}) });
  }

  /**
   * Replays a node's history after `position`, moving the position past each entry applied
   * (when `positions` is given); it stops moving at the first entry that could not be applied
   * (`complete` false), so the next catch-up tries that one again. With `live` (a catch-up), it
   * stops at the first entry that also reached us live. The next page is asked for while one is
   * applied (one page ahead: the sink sets the pace). `last`: the id of the last entry read.
   * Ends with a StoppedError once stopped() or once `alive` says no (a node no longer followed).
   */
  private async replayHistory(service: string, node: string, position: string | undefined, positions: HistoryPositions | undefined, live?: LiveTrack, alive?: () => boolean): Promise<{ replayed: number; complete: boolean; retry: boolean; last: string | undefined }> {
    let replayed = 0;
    let superseded = 0;
    let applied: string | undefined = position;
    let lastRead: string | undefined = position;
    let failed = false;
    /** Items whose write failed in a way that may pass (not RefusedWrite): trying again may help. */
    const retryable = new Set<string>();
    const k = `${service}\0${node}`;
    const ask = (after: string | undefined): Promise<HistoryPage> => {
      const max = this.historyPages.get(k)?.max ?? HISTORY_PAGE;
      const page = this.o.client.history(service, node, { max, ...(after !== undefined ? { after } : {}) });
      page.then(
        () => {
          const size = this.historyPages.get(k);
          if (!size || ++size.ok < PAGE_GROW_AFTER) return;
          if (size.max * 2 >= HISTORY_PAGE) this.historyPages.delete(k);
          else this.historyPages.set(k, { max: size.max * 2, ok: 0 });
        },
        (err: unknown) => {
          // No answer in time (large items on a slow link): the next try asks half as many entries per page.
          if (!(err instanceof IqError) || err.condition !== 'remote-server-timeout' || max <= 1) return;
          this.historyPages.set(k, { max: Math.max(1, Math.floor(max / 2)), ok: 0 });
          this.o.log.info('a history page got no answer in time; asking smaller pages', { service, node, entries: Math.max(1, Math.floor(max / 2)), reason: err.message });
        },
      );
      return page;
    };
    let next: Promise<HistoryPage> | undefined = ask(position);
    for (let page = 0; page < 100_000 && next; page++) {
      if (this.o.stopped() || (alive && !alive())) throw new StoppedError();
      const read: HistoryPage = await next;
      const { complete, last } = read;
      // The archive is in publication order and every event since we subscribed reaches us live
      // (with its archive id): from the first one that did, the rest of the history is not read.
      const reached = read.entries.findIndex(({ id }) => live?.liveSids?.has(id) === true);
      const entries = reached === -1 ? read.entries : read.entries.slice(0, reached);
      next = reached === -1 && !complete && last && entries.length > 0 ? ask(last) : undefined;
      const before = applied;
      // A page's entries are applied together (the sink batches them; each document in order).
      // Items a newer live event touched (LiveTrack.supersedes) are not applied from them; the
      // entries are taken first, so a notification of one of them arriving from now on (it lagged
      // behind the history) supersedes nothing.
      const touched = live?.supersedes;
      const events = entries.map(({ message }) => {
        const { event, dropped } = withoutSuperseded(message.getChild('event', NS.PUBSUB_EVENT), touched);
        superseded += dropped;
        return event;
      });
      for (const { id } of entries) live?.taken?.add(id);
      const results = await Promise.all(events.map((event) => this.applyEvent(service, node, event, retryable)));
      entries.forEach(({ id }, i) => {
        replayed++;
        lastRead = id;
        if (!results[i]) failed = true;
        else if (!failed) applied = id;
      });
      if (positions && applied !== undefined && applied !== before) await positions.set(service, node, applied);
    }
    if (superseded > 0) this.o.log.debug('history entries superseded by live notifications were not applied', { service, node, items: superseded });
    return { replayed, complete: !failed, retry: retryable.size > 0, last: lastRead };
  }

  /**
   * Writes the items and applies the retractions of one event of a followed node; false if any
   * failed (their ids added to `failed` where trying again may help: not when a stop cut them
   * short, not when the sink refused the leaf itself, RefusedWrite), and for an event of a
   * partner removed meanwhile. Every write and retraction is handed to the sink at once, in the
   * event's order (the sink batches them and keeps each document's order), before this waits for
   * them; so the events of a history page, started one after the other, are written together too.
   */
  private async applyEvent(from: string, node: string, event: Element | undefined, failed?: Set<string>): Promise<boolean> {
    const items = event?.getChild('items');
    if (!items) return true;
    const partner = this.o.partnerOf(from);
    // Its partner removed meanwhile (a history page read before): written nowhere, rather than
    // into the content database (where a sink writes what has no partner).
    if (partner === undefined && !this.o.isPartner(from)) {
      this.o.log.debug('event of a removed partner not applied', { from, node });
      return false; // not applied: a history position must not move past it
    }
    const log = (what: string, id: unknown) => (err: unknown) => {
      this.o.log[err instanceof StoppedError ? 'debug' : 'error'](what, { from, node, item: id, reason: String(err) });
      if (!(err instanceof StoppedError) && !(err instanceof RefusedWrite)) failed?.add(String(id));
      return false;
    };
    // In document order: a digest (pubsub#digest) may carry an edit, its retraction and a new
    // edit of the same document in one <items/>.
    const done: Array<Promise<boolean>> = [];
    for (const child of items.children) {
      if (typeof child === 'string') continue;
      if (child.name === 'item') done.push(this.o.oneCopy.write(from, node, child, partner).then(() => true, log('writing a replicated document failed', child.attrs.id)));
      else if (child.name === 'retract') {
        const followedElsewhere = (other: string): boolean => other !== node && this.o.followed(from, other) !== undefined;
        const id = child.attrs.id as string;
        const retract = (): Promise<void> => this.o.sink.retract(from, node, id, followedElsewhere, partner);
        done.push(this.o.oneCopy.retract(from, node, id, retract).then(() => true, log('deleting a retracted document failed', child.attrs.id)));
      }
    }
    return (await Promise.all(done)).every(Boolean);
  }

  /**
   * A live notification with archive id `id` was applied (or failed): the node's position moves
   * to the newest id before which everything received was applied. Writes are coalesced.
   */
  private settle(f: Followed, entry: LiveTrack['queue'][number], ok: boolean): void {
    const live = f.live;
    entry.settled = true;
    entry.ok = ok;
    let position: string | undefined;
    while (live.queue[0]?.settled) {
      const done = live.queue.shift() as LiveTrack['queue'][number];
      if (!done.ok && !live.held) {
        live.held = true;
        this.o.log.warn('history position held: a notification could not be applied', { service: f.service, node: f.node, id: done.id });
      }
      position = done.id;
    }
    if (position === undefined || live.held) return;
    if (live.catchingUp) live.afterCatchUp = position;
    else this.savePosition(f, position);
  }

  /** Writes a followed node's history position; writes asked for while one is under way are coalesced. */
  savePosition(f: Followed, position: string): void {
    const positions = this.o.positions;
    const live = f.live;
    if (!positions) return;
    live.next = position;
    live.saving ??= (async () => {
      while (live.next !== undefined) {
        const id = live.next;
        live.next = undefined;
        await positions.set(f.service, f.node, id).catch((err: unknown) => this.o.log.error('saving the history position failed', { service: f.service, node: f.node, reason: String(err) }));
      }
    })().finally(() => (live.saving = undefined));
  }

  /**
   * Flow control for live notifications. A partner that publishes faster than our sink writes (a
   * first sync of a large database) would have us hold its notifications in memory until their
   * turn, without bound: XMPP has no flow control of its own, and pausing our socket would hold
   * back the IQ results that work under way waits for. So once `liveBacklogItems` items wait for
   * the sink, a node whose history we can read (XEP-0313 on nodes, positions kept; during a
   * catch-up, only one that started from a point in that history) leaves its further
   * notifications to that history: they are not applied and
   * its position stays before the first of them; `drain` reads them back at the sink's pace.
   * Nothing is lost (the archive keeps them; a restart replays from the position) and memory
   * stays bounded. True: this one was left.
   */
  private leaveToHistory(f: Followed): boolean {
    const live = f.live;
    if (live.deferred) return true;
    if (this.backlog < this.bound || !this.replayable(f)) return false;
    this.o.log.info('partner notifications arrive faster than they are written: reading the node from its history at our pace', { service: f.service, node: f.node, waitingItems: this.backlog });
    this.startDrain(f);
    return true;
  }

  /**
   * Flow control for a service without history (no XEP-0313 on its nodes), which cannot be read
   * back: once `liveBacklogItems` items wait for the sink, the ids a notification names are kept
   * instead of its payloads (an id per item, however large) and read by id at the sink's pace
   * (readLeft): written as they are then, or retracted where the node no longer has them. Until
   * those reads end, the node's further notifications are kept as ids too (a read finds the
   * newest version anyway). What is kept is lost by a stop; the next follow reads the node's
   * current items anyway. True: the notification was left so.
   */
  private leaveToReads(f: Followed, items: Element): boolean {
    if (this.backlog < this.bound && !f.live.reading) return false;
    if (this.o.withHistory(f.service) || !items.getChildElements().some((c) => c.name === 'item' || c.name === 'retract')) return false;
    const unread = (f.live.unread ??= new Set());
    const first = unread.size === 0 && !f.live.reading;
    for (const child of items.getChildElements()) {
      if ((child.name !== 'item' && child.name !== 'retract') || child.attrs.id === undefined) continue;
      const id = String(child.attrs.id);
      unread.add(id);
      if (f.rereads?.has(id)) f.rereads.set(id, 1); // newer than a re-read under way: readLeft reads it after
    }
    if (unread.size > UNREAD_MAX) {
      // More distinct items than are worth remembering one by one: the node's current items instead.
      this.o.log.warn('partner notifications kept as ids exceed the bound; following the node again', { service: f.service, node: f.node, items: unread.size });
      unread.clear();
      this.o.forget(f);
      const partner = this.o.partnerOf(f.service);
      if (partner !== undefined) this.o.discoverSoon(partner);
      return true;
    }
    if (first) this.o.log.info('partner notifications arrive faster than they are written: keeping their item ids to read the items at our pace', { service: f.service, node: f.node, waitingItems: this.backlog });
    if (!f.live.reading) {
      f.live.reading = true;
      this.track(this.readLeft(f).finally(() => (f.live.reading = false)));
    }
    return true;
  }

  /**
   * Reads the items leaveToReads kept, ITEM_PAGE ids at a time, each page once the backlog is
   * down to a quarter of its bound and the node's own live events have settled; a retraction
   * waits for the node's notifications without payload of that item (OneCopyFollows.retract),
   * as a live one does. A page whose read fails is tried again after `retryFirstMs`, doubling up
   * to the discovery interval, DRAIN_ATTEMPTS times in a row at most, and not after an answer
   * that decides (the service refuses reads by id): then the ids are dropped and the node is
   * followed afresh (its current items read). An item that fails to write goes to rereadItems.
   * Ends when none are left, once stopped(), and when `f` is no longer followed.
   */
  private async readLeft(f: Followed): Promise<void> {
    const { service, node } = f;
    const gone = (): boolean => this.o.stopped() || this.o.followed(service, node) !== f;
    const unread = f.live.unread as Set<string>;
    let retryMs = this.o.retryFirstMs;
    let failures = 0;
    let read = 0;
    while (!gone() && unread.size > 0) {
      while (!gone() && (this.backlog > this.bound / 4 || f.live.inFlight > 0)) await new Promise<void>((wake) => this.backlogWaiters.push(wake));
      if (gone()) return;
      const ids = [...unread].slice(0, ITEM_PAGE);
      for (const id of ids) unread.delete(id);
      this.backlog += ids.length;
      let failure: unknown;
      try {
        const found = new Map<string, Element>();
        for (const item of await this.o.client.itemsById(service, node, ids)) if (item.getChildElements().length > 0) found.set(String(item.attrs.id), item);
        if (gone()) return;
        const partner = this.o.partnerOf(service);
        const followedElsewhere = (other: string): boolean => other !== node && this.o.followed(service, other) !== undefined;
        const results = await Promise.allSettled(ids.map((id) => {
          const item = found.get(id);
          return item ? this.o.sink.writeItem(service, node, item, partner) : this.o.oneCopy.retract(service, node, id, () => this.o.sink.retract(service, node, id, followedElsewhere, partner));
        }));
        const failed = ids.filter((_, i) => results[i]?.status === 'rejected' && !((results[i] as PromiseRejectedResult).reason instanceof RefusedWrite));
        if (failed.length > 0) this.rereadItems(f, failed);
        read += ids.length;
        retryMs = this.o.retryFirstMs;
        failures = 0;
      } catch (err) {
        if (gone()) return;
        for (const id of ids) unread.add(id);
        failure = err;
      } finally {
        this.backlog -= ids.length; // before any pause: a failing node holds no room meanwhile
        this.backlogChanged();
      }
      if (failure === undefined) continue;
      failures++;
      if (failures >= DRAIN_ATTEMPTS || (failure instanceof IqError && !failure.undecided)) {
        // Given up: followed again by a discovery, whose catch-up reads the node's current items.
        this.o.log.warn('reading partner items kept while the database was behind failed; following the node again', { service, node, items: unread.size, reason: String(failure) });
        unread.clear();
        f.live.unread = undefined;
        this.o.forget(f);
        const partner = this.o.partnerOf(service);
        if (partner !== undefined) this.o.discoverSoon(partner);
        return;
      }
      this.o.log.warn('reading partner items kept while the database was behind failed; trying again', { service, node, items: unread.size, retryInSeconds: retryMs / 1000, reason: String(failure) });
      await this.pause(retryMs);
      retryMs = Math.min(retryMs * 2, this.o.intervalMs);
    }
    if (unread.size === 0) {
      f.live.unread = undefined;
      if (read > 0) this.o.log.info('partner items kept while the database was behind: read and applied', { service, node, items: read });
    }
  }

  /** Whether what reaches us of `f` from now on can be read back from its history (positions kept; during a catch-up, one that started from a point in that history). */
  private replayable(f: Followed): boolean {
    return !!this.o.positions && this.o.withHistory(f.service) && (!f.live.catchingUp || f.live.replayable === true);
  }

  /** Leaves `f`'s further notifications to its history and reads them back (drain). */
  startDrain(f: Followed): void {
    f.live.deferred = true;
    this.track(this.drain(f));
  }

  /**
   * Live notifications of `f` could not be applied (the database down past the sink's retries):
   * they are applied again without waiting for a restart. With an archive id (`sid`) and a
   * history to read back, the node is read from its saved position (held before the failure) as
   * flow control does — delivery paused, tried again until the history is applied (drain).
   * Otherwise (a notification without archive id, such as the §6.1.7 last item sent on
   * subscribing, which lies before the position a first catch-up saves; a service without
   * history) the items named in `ids` are read again as they are now (rereadItems).
   */
  private applyAgain(f: Followed, sid: string | undefined, ids: Iterable<string>): void {
    if (this.o.stopped() || this.o.followed(f.service, f.node) !== f) return;
    if (sid !== undefined && this.replayable(f)) {
      if (f.live.deferred) return; // a drain under way reads it (it starts from the saved position)
      this.o.log.warn('a partner notification could not be written; reading the node again from its history', { service: f.service, node: f.node, id: sid });
      this.startDrain(f);
      return;
    }
    // A catch-up without a restart point in the history (a drain's last stretch, a first follow
    // whose history end was not read): the items now, and once it ends a drain from the saved
    // position, which releases the position this failure holds.
    if (sid !== undefined && this.o.positions && this.o.withHistory(f.service) && f.live.catchingUp && !f.live.deferred) f.live.drainAfterCatchUp = true;
    this.rereadItems(f, ids);
  }

  /**
   * Reads items of `f` again (XEP-0060 §6.5.8 by id) and applies them as they are now — written,
   * or retracted where the node no longer has them — after `retryFirstMs`, doubling up to the discovery
   * interval, until that succeeds (at most REREAD_ATTEMPTS times; then logged as an error: the item
   * waits for its next edit). A leaf the sink refused for itself (RefusedWrite) is not tried
   * again. An item a live notification touched since
   * the read was asked for is left to it (newer). Ends once stopped() and when the node is no longer
   * followed. Never rejects.
   */
  rereadItems(f: Followed, ids: Iterable<string>): void {
    const { service, node } = f;
    const pending = (f.rereads ??= new Map());
    const asked = [...ids];
    // One being read already: a newer version of it failed meanwhile, so that read (which leaves
    // it to the live event) must read it once more.
    for (const id of asked) if (pending.has(id)) pending.set(id, 2);
    const fresh = asked.filter((id) => !pending.has(id));
    if (fresh.length === 0) return;
    for (const id of fresh) pending.set(id, 0);
    this.o.log.warn('partner items could not be written; reading them again', { service, node, items: fresh.length, first: fresh[0] });
    const gone = (): boolean => this.o.stopped() || this.o.followed(service, node) !== f;
    const task = async (): Promise<void> => {
      // The ids this task reads (an id leaves once done, so that a later task may own it).
      const owned = new Set(fresh);
      let todo = fresh;
      let retryMs = this.o.retryFirstMs;
      for (let attempt = 1; attempt <= REREAD_ATTEMPTS && todo.length > 0; attempt++) {
        await this.pause(retryMs);
        retryMs = Math.min(retryMs * 2, this.o.intervalMs);
        if (gone()) return;
        try {
          for (const id of todo) pending.set(id, 0); // a live event touching it from now on is newer than what we read
          const found = new Map<string, Element>();
          for (const item of await this.o.client.itemsById(service, node, todo)) if (item.getChildElements().length > 0) found.set(String(item.attrs.id), item);
          if (gone()) return;
          const partner = this.o.partnerOf(service);
          const followedElsewhere = (other: string): boolean => other !== node && this.o.followed(service, other) !== undefined;
          const mine = todo.filter((id) => pending.get(id) === 0);
          const results = await Promise.allSettled(mine.map((id) => {
            const item = found.get(id);
            return item ? this.o.sink.writeItem(service, node, item, partner) : this.o.oneCopy.retract(service, node, id, () => this.o.sink.retract(service, node, id, followedElsewhere, partner));
          }));
          // A leaf the sink refused for itself (RefusedWrite, logged by it) is not tried again.
          const failures = mine.flatMap((id, i) => (results[i]?.status === 'rejected' && !((results[i] as PromiseRejectedResult).reason instanceof RefusedWrite) ? [id] : []));
          // Read again: what failed now (unless a live event has a newer version of it: 1), and
          // what a live event left to this read and then failed to write itself (2).
          todo = [...owned].filter((id) => pending.get(id) === 2 || (pending.get(id) === 0 && failures.includes(id)));
          for (const id of owned) {
            if (todo.includes(id)) continue;
            pending.delete(id);
            owned.delete(id);
          }
          if (todo.length === 0) {
            const refused = mine.filter((_, i) => results[i]?.status === 'rejected' && (results[i] as PromiseRejectedResult).reason instanceof RefusedWrite).length;
            const applied = mine.filter((_, i) => results[i]?.status === 'fulfilled').length;
            this.o.log.info('partner items applied on a later attempt', { service, node, items: applied, ...(refused > 0 ? { refused } : {}), attempts: attempt });
            return;
          }
          const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
          this.o.log.warn('partner items still not written; trying again', { service, node, items: todo.length, retryInSeconds: retryMs / 1000, reason: failure ? String(failure.reason) : 'a newer version failed live meanwhile' });
        } catch (err) {
          if (gone()) return;
          this.o.log.warn('reading partner items again failed; trying again', { service, node, items: todo.length, retryInSeconds: retryMs / 1000, reason: String(err) });
        }
      }
      // Out of attempts; what a live failure handed over in the last one gets attempts of its own.
      const again = todo.filter((id) => pending.get(id) === 2);
      for (const id of todo) pending.delete(id);
      if (gone()) return;
      if (todo.length > again.length) this.o.log.error('partner items not written after repeated attempts: they wait for their next edit', { service, node, items: todo.length - again.length, first: todo.find((id) => !again.includes(id)) });
      if (again.length > 0) this.rereadItems(f, again);
    };
    this.track(task());
  }

  /**
   * Reads back what leaveToHistory left of a node. Asks the service to pause delivery
   * (pubsub#deliver) meanwhile — the history has it all, and nobody need carry what we would
   * leave — then, once the backlog is down to a quarter of its bound and the node's own live
   * work has settled (its position written), reads the history page by page (one page ahead:
   * the sink sets the pace) from the saved position to its end. Then it resumes delivery and
   * catches up as a follow does: notifications are applied as they arrive again, and the
   * history is read on only up to the first of them (everything after it arrives live). A failed
   * attempt is tried again from where it stopped after `retryFirstMs`, doubling up to the discovery
   * interval. Ends once stopped() and when the node is no longer followed. Never rejects.
   */
  private async drain(f: Followed): Promise<void> {
    const { service, node, live } = f;
    const positions = this.o.positions as HistoryPositions;
    const gone = (): boolean => this.o.stopped() || this.o.followed(service, node) !== f;
    const held = (complete: boolean): void => {
      if (complete || live.held) return;
      live.held = true;
      this.o.log.warn('history position held: an entry could not be applied; read again from before it', { service, node });
    };
    let pause = this.o.setDelivery(f, false);
    let from: string | undefined;
    let first = true;
    let entries = 0;
    let retryMs = this.o.retryFirstMs;
    let failure: unknown;
    for (let attempt = 1; attempt <= DRAIN_ATTEMPTS; attempt++) {
      // Woken by each live event that settles (the sink's writes end: they succeed, or fail
      // after its bounded retries), by the end of a catch-up and by the manager's stop().
      while (!gone() && (this.backlog > this.bound / 4 || live.inFlight > 0 || live.catchingUp)) await new Promise<void>((wake) => this.backlogWaiters.push(wake));
      await live.saving;
      if (gone()) {
        live.held = true; // what settles late must not move the position past what was left
        return;
      }
      try {
        // To the end of the history. From the saved position everything before it was applied,
        // so the replay may move it; after an entry that could not be applied it stays put.
        const start = first ? await positions.get(service, node) : from;
        const pulled = await this.replayHistory(service, node, start, first || !live.held ? positions : undefined, undefined, () => !gone());
        if (first && pulled.complete) live.held = false;
        held(pulled.complete);
        // An entry not applied (the database still down): tried again from the saved position,
        // which the replay moved up to it (or from where the last attempt read on).
        if (!pulled.complete && pulled.retry) throw new Error('a history entry could not be written');
        first = false;
        from = pulled.last ?? start;
        entries += pulled.replayed;
        // Delivery back on (also when the pause got no answer: it may have been applied).
        const paused = await pause;
        if (paused !== 'refused') {
          const resumed = await this.o.setDelivery(f, true);
          if (resumed !== 'taken' && !(resumed === 'refused' && paused === 'unknown')) throw new Error('the partner service did not resume delivery');
          pause = Promise.resolve('refused');
        }
        if (gone()) {
          live.held = true;
          return;
        }
        // Then up to the first notification that arrives live.
        live.deferred = false;
        live.catchingUp = true;
        live.replayable = false; // this last short catch-up applies what arrives
        live.liveSids = new Set();
        live.liveItems = new Map();
        live.taken = new Set();
        live.supersedes = new Set();
        live.afterCatchUp = undefined;
        try {
          const rest = await this.replayHistory(service, node, from, live.held ? undefined : positions, live, () => !gone());
          held(rest.complete);
          entries += rest.replayed;
          if (!rest.complete && rest.retry) throw new Error('a history entry could not be written');
        } catch (err) {
          // Left again until the next attempt, which starts from the saved position: live
          // notifications applied meanwhile must not move it past what this one did not read.
          live.deferred = true;
          live.held = true;
          first = true;
          pause = this.o.setDelivery(f, false);
          throw err;
        } finally {
          live.catchingUp = false;
          live.liveSids = undefined;
          live.liveItems = undefined;
          live.taken = undefined;
          live.supersedes = undefined;
        }
        if (live.afterCatchUp !== undefined && !live.held) this.savePosition(f, live.afterCatchUp);
        live.afterCatchUp = undefined;
        this.o.log.info('caught up with partner node from its history; applying its notifications as they arrive again', { service, node, entries, attempts: attempt });
        if (live.drainAfterCatchUp) {
          live.drainAfterCatchUp = false;
          this.startDrain(f);
        }
        return;
      } catch (err) {
        if (gone()) {
          live.held = true;
          return;
        }
        failure = err;
        // The position fell out of the partner's history (trimmed while we were behind): no
        // retry can read it; following the node again falls back to its current items.
        if (err instanceof IqError && err.condition === 'item-not-found') break;
        if (attempt === DRAIN_ATTEMPTS) break;
        this.o.log.warn('reading the history of a partner node (notifications left to it) failed; trying again', { service, node, reason: String(err), retryInSeconds: retryMs / 1000 });
        await this.pause(retryMs);
        retryMs = Math.min(retryMs * 2, this.o.intervalMs);
      }
    }
    // Given up: the node is followed again by a discovery (its catch-up reads the history from
    // the saved position, or the current items), which also turns delivery back on.
    live.held = true;
    live.deferred = false;
    this.o.forget(f);
    this.o.log.warn('reading the history of a partner node (notifications left to it) failed; following the node again', { service, node, reason: String(failure) });
    void pause.then((paused) => (paused !== 'refused' && !this.o.stopped() ? this.o.setDelivery(f, true) : undefined));
    const partner = this.o.partnerOf(service);
    if (partner !== undefined) this.o.discoverSoon(partner);
  }


  /** Waits `ms`, or less once stopped() (the manager's stop() wakes the waiters: backlogChanged). */
  async pause(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let over = false;
    await new Promise<void>((wake) => {
      timer = setTimeout(wake, ms);
      const onChange = (): void => {
        if (over) return;
        if (this.o.stopped()) wake();
        else this.backlogWaiters.push(onChange);
      };
      this.backlogWaiters.push(onChange);
    });
    over = true;
    clearTimeout(timer);
  }

  /** Wakes the drains waiting for the backlog (a live event settled, or stopping). */
  backlogChanged(): void {
    if (this.backlogWaiters.length === 0) return;
    const waiters = this.backlogWaiters;
    this.backlogWaiters = [];
    for (const wake of waiters) wake();
  }
}
