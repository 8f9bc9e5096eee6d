// The partner's side of one copy (`{urn:hermod:pubsub:0}one_copy`, README "One copy of a document
// in several tags"), for the PartnerManager (partners.ts): a service sends an item published to
// several of our followed nodes with its payload once, and through the other nodes a notification
// without payload (XEP-0060 §7.1.2.2's form). Here:
// - each item notification of a one-copy follow gets its ordinal (PayloadsSeen, arrival order);
//   a payload counts as written for its later notifications without payload once the sink wrote it;
// - a notification without payload waits for that payload (payloads-seen.ts: only one that
//   arrived after the item's previous notification on its own node stands for it), else the item
//   is fetched (§6.5.8); a retraction on that node waits for it;
// - a one-copy follow that ends (unfollowed, or ended by the partner) still has its late payloads
//   written for a grace period — unless retracted since — and its payloads not written by then
//   are read again from a node still followed (an older payload may have been taken for them).
// What to follow, subscription options and positions stay with the PartnerManager.

import type { Element } from 'ltx';
import type { Logger } from '../log.ts';
import type { PubsubClient } from '../xmpp/pubsub-client.ts';
import type { PartnerSink } from '../sinks/sink.ts';
import { PayloadsSeen } from './payloads-seen.ts';
import { StoppedError } from './stopped-error.ts';

/** Items read again per request after a follow ended. */
const ITEM_PAGE = 100;

/** What OneCopyFollows needs of the PartnerManager. */
export interface OneCopyContext {
  client: Pick<PubsubClient, 'itemsById'>;
  sink: PartnerSink;
  log: Logger;
  /** How long a notification without payload waits for its payload (ms); also the grace period of an ended follow. */
  waitMs: number;
  /** Whether this partner's node is written like the others (no stylesheet of its own): one copy applies. */
  applies(partner: string | undefined, node: string): boolean;
  partnerOf(service: string): string | undefined;
  /** The follow of a node, if followed (what the service took of one_copy for it). */
  followed(service: string, node: string): { oneCopy?: boolean } | undefined;
  stopped(): boolean;
  /** Aborted on stop: waits for payloads end. */
  signal: AbortSignal;
  /** Waits `ms`, or less on stop. */
  pause(ms: number): Promise<void>;
  /** A task stop() waits for. */
  track(task: Promise<void>): void;
  /** Reads items of a followed node again, backing off until they are written (FollowDelivery.rereadItems). */
  reread(service: string, node: string, ids: string[]): void;
}

export class OneCopyFollows {
  /** Notifications of one-copy subscriptions and the payloads written, for notifications without payload. */
  private readonly payloads = new PayloadsSeen();
  /** The PayloadsSeen ordinals of the items of live notifications of one-copy subscriptions. */
  private readonly ordinals = new WeakMap<Element, { at: number; prev: number }>();
  /** Notifications without payload being resolved, by service, node and item: a retraction there waits. */
  private readonly pendingStubs = new Map<string, Promise<unknown>>();
  /** One-copy follows that ended lately -> until when their payloads are still written (ended()). */
  private readonly endedFollows = new Map<string, number>();
  /**
   * While some follow's grace period runs (endedFollows): service \0 item id -> when a followed
   * node of that service last retracted it. A late payload of an ended node older than that
   * retraction is not written (it would bring the document back).
   */
  private readonly retractedLately = new Map<string, number>();

  constructor(private readonly c: OneCopyContext) {}

  /** PayloadsSeen.now(): what a follow starting now was notified before is not known (Followed.since). */
  now(): number {
    return this.payloads.now();
  }

  /** Gives each item notification of `items` (a live event of a one-copy follow begun at `since`) its ordinal, in arrival order. */
  arrived(service: string, node: string, since: number, items: Element): void {
    for (const child of items.children) if (typeof child !== 'string' && child.name === 'item' && child.attrs.id !== undefined) this.ordinals.set(child, this.payloads.notified(service, node, String(child.attrs.id), since, child.getChildElements().length > 0));
  }

  /**
   * Writes one item of a live event: a payload through the sink (counted as written for later
   * notifications without payload once the sink wrote it as such); a notification without
   * payload by waiting for its payload or fetching it (withoutPayload), which a retraction of
   * the item on this node then waits for. Rejects as the write or the fetch does.
   */
  write(service: string, node: string, item: Element, partner: string | undefined): Promise<unknown> {
    const id = String(item.attrs.id);
    const ordinal = this.ordinals.get(item);
    if (item.getChildElements().length > 0) {
      const write = this.c.sink.writeItem(service, node, item, partner);
      // A live payload of a one-copy node, once the sink wrote it as such (not through a
      // stylesheet added since, not skipped), stands for its notifications without payload.
      return ordinal ? write.then((r) => (r === true && this.c.applies(partner, node) && this.payloads.written(service, id, ordinal.at), r)) : write;
    }
    const write = this.withoutPayload(service, node, item, partner, ordinal?.prev);
    // A retraction of the item on this node waits for it (the payload may come late through another node).
    const k = `${service}\0${node}\0${id}`;
    const prior = this.pendingStubs.get(k);
    const pending: Promise<unknown> = prior ? Promise.all([prior, write.catch(() => undefined)]) : write.catch(() => undefined);
    this.pendingStubs.set(k, pending);
    void pending.then(() => this.pendingStubs.get(k) === pending && this.pendingStubs.delete(k));
    return write;
  }

  /** Applies a retraction of `id` on a followed node (`retract`) once the notifications without payload of that item there are resolved. */
  retract(service: string, node: string, id: string, retract: () => Promise<void>): Promise<void> {
    if (this.endedFollows.size > 0 && this.graceRunning()) this.retractedLately.set(`${service}\0${id}`, Date.now());
    const stub = this.pendingStubs.get(`${service}\0${node}\0${id}`);
    return stub ? stub.then(retract) : retract();
  }

  /**
   * An item notified without its payload (XEP-0060 §7.1.2.2): on a one-copy subscription
   * (`after`: the ordinal of the item's previous notification on this node, PayloadsSeen) whose
   * node is still written like the others, the payload comes — or came — through another node's
   * notification, so it waits for that to be written, up to `waitMs`; otherwise, or when it does
   * not come, the item is fetched (§6.5.8) and written. An item gone meanwhile (its retraction is
   * on its way) writes nothing. Rejects when the fetch or the write fails (StoppedError on stop).
   */
  private async withoutPayload(service: string, node: string, item: Element, partner: string | undefined, after: number | undefined): Promise<void> {
    const id = item.attrs.id as string | undefined;
    if (id === undefined) return;
    if (after !== undefined && this.c.applies(partner, node) && (await this.payloads.wait(service, id, after, this.c.waitMs, this.c.signal))) return;
    if (this.c.stopped()) throw new StoppedError();
    const [full] = (await this.c.client.itemsById(service, node, [id])).filter((i) => i.attrs.id === id && i.getChildElements().length > 0);
    if (!full) {
      this.c.log.debug('notified item without payload is gone', { service, node, item: id });
      return;
    }
    await this.c.sink.writeItem(service, node, full, partner);
  }

  /**
   * A one-copy follow ends (unfollowed, or the partner ended the subscription): its payloads still
   * on their way are written for a while (afterEnd). A notification without payload on another
   * node may have been taken as done with an older payload of the same item that arrived after it
   * (each node's digest window flushes on its own), the newer one being on its way through this
   * node: dropped, that version would never be written.
   */
  ended(service: string, node: string): void {
    const until = Date.now() + this.c.waitMs;
    this.endedFollows.set(`${service}\0${node}`, until);
    for (const [k, at] of this.endedFollows) if (at < Date.now()) this.endedFollows.delete(k);
    // A payload of this node not written when it ends (left to its history, or still on its way
    // past the grace period) may be the version another node's notification was taken to stand
    // for: once the grace period is over, such items are read again from a node still followed.
    const unsettled = this.payloads.unwritten(service, node);
    if (unsettled.length === 0) return;
    this.c.track(
      (async () => {
        await this.c.pause(this.c.waitMs);
        await this.readAgain(service, unsettled);
      })(),
    );
  }

  /**
   * Reads `unsettled` items (ended()) from one-copy nodes of `service` still followed, 100 per
   * request, and writes them; a request or write that fails is left to the context's reread
   * (tried again, backing off). Items of which no node is followed any more are logged. Errors:
   * none (logged).
   */
  private async readAgain(service: string, unsettled: Array<{ itemId: string; others: string[] }>): Promise<void> {
    const partner = this.c.partnerOf(service);
    if (this.c.stopped() || partner === undefined) return;
    const byNode = new Map<string, string[]>();
    const nowhere: string[] = [];
    for (const { itemId, others } of unsettled) {
      const node = others.find((n) => this.c.followed(service, n)?.oneCopy === true);
      if (node !== undefined) byNode.set(node, [...(byNode.get(node) ?? []), itemId]);
      else nowhere.push(itemId);
    }
    if (nowhere.length > 0) this.c.log.warn('items of a one-copy follow that ended cannot be read again: no node carrying them is followed now; they wait for their next edit', { service, items: nowhere.length, first: nowhere[0] });
    for (const [node, ids] of byNode) {
      for (let i = 0; i < ids.length && !this.c.stopped(); i += ITEM_PAGE) {
        const page = ids.slice(i, i + ITEM_PAGE);
        try {
          const items = (await this.c.client.itemsById(service, node, page)).filter((item) => item.getChildElements().length > 0);
          await Promise.all(items.map((item) => this.c.sink.writeItem(service, node, item, partner)));
          this.c.log.debug('items read again after a one-copy follow ended', { service, node, items: items.length });
        } catch (err) {
          if (this.c.stopped() || !this.c.followed(service, node)) continue;
          this.c.log.warn('reading items again after a one-copy follow ended failed; trying again', { service, node, items: page.length, reason: String(err) });
          this.c.reread(service, node, page);
        }
      }
    }
  }

  /** Whether some ended follow's grace period runs; forgets those over (and retractedLately with the last). */
  private graceRunning(): boolean {
    const now = Date.now();
    for (const [k, until] of this.endedFollows) if (until < now) this.endedFollows.delete(k);
    if (this.endedFollows.size === 0) this.retractedLately.clear();
    return this.endedFollows.size > 0;
  }

  /** Whether `node` is a one-copy follow that ended within the grace period. */
  endedLately(service: string, node: string): boolean {
    const until = this.endedFollows.get(`${service}\0${node}`);
    return until !== undefined && until >= Date.now();
  }

  /**
   * Writes the payloads of a notification of a one-copy node that ended lately (ended()); no
   * position is kept for it. Not for a partner removed meanwhile (its target is not known any
   * more). False either way, as for any node not followed: the other replication of this Hermod
   * gets the notification too, should it follow that node.
   */
  afterEnd(service: string, node: string, items: Element): false {
    const partner = this.c.partnerOf(service);
    if (partner === undefined) return false;
    // A payload retracted after it in this very notification (a digest), or by a followed node of
    // the service since this follow ended, stays unwritten: its retraction is not applied here.
    const endedAt = (this.endedFollows.get(`${service}\0${node}`) ?? 0) - this.c.waitMs;
    const children = items.getChildElements();
    for (let i = 0; i < children.length; i++) {
      const child = children[i] as Element;
      if (child.name !== 'item' || child.getChildElements().length === 0) continue;
      const id = String(child.attrs.id);
      if (children.slice(i + 1).some((c) => c.name === 'retract' && String(c.attrs.id) === id)) continue;
      if ((this.retractedLately.get(`${service}\0${id}`) ?? -Infinity) >= endedAt) continue;
      this.c.sink.writeItem(service, node, child, partner).catch((err: unknown) => this.c.log.error('writing a replicated document failed', { from: service, node, item: child.attrs.id, reason: String(err) }));
    }
    return false;
  }
}
