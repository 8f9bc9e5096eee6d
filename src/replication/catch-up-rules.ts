// The rules a partner's catch-up follows while notifications arrive (FollowDelivery in
// follow-delivery.ts): which items of a page of current items it takes, which history entries a
// newer live notification superseded, and which item a next page is asked for after. Pure
// functions of what was read and what the live events touched.

import { Element } from 'ltx';

/**
 * What a catch-up takes from one page of a node's current items (XEP-0060 §6.5, in publication
 * order: a republished item moves to the end), given `touched` (LiveTrack.liveItems: item id ->
 * ordinal of the first live event that published or retracted it) and `askedAt` (how many live
 * events had been received when the page was asked for). Every publication since we subscribed
 * reaches us live, so:
 * - an item no live event touched is taken;
 * - an item a live event touched BEFORE the page was asked for stands, in this page, at a
 *   publication made since we subscribed (the service had committed that event when it answered:
 *   it had sent its notification) — it and everything after it is what the notifications carry,
 *   so the catch-up stops there (`reached`; reading on would fetch every item twice while the
 *   partner keeps publishing);
 * - an item a live event touched only after the page was asked for may be the version from
 *   before that event — applied after it, it would bring back an older version or a retracted
 *   item, and stopping at its old place would drop the items published after it — so it is
 *   skipped (`skipped`) and the catch-up reads on: the live event is newer, or the page's
 *   version came after it and is notified too.
 * Without `touched` (nothing known of live events) every item is taken.
 */
export function pageOfItems(read: Element[], touched: ReadonlyMap<string, number> | undefined, askedAt: number): { page: Element[]; reached: boolean; skipped: number } {
  if (!touched || touched.size === 0) return { page: read, reached: false, skipped: 0 };
  const page: Element[] = [];
  let skipped = 0;
  for (const item of read) {
    const at = touched.get(String(item.attrs.id));
    if (at === undefined) page.push(item);
    else if (at < askedAt) return { page, reached: true, skipped };
    else skipped++;
  }
  return { page, reached: false, skipped };
}

/**
 * A history entry's event (XEP-0313 on a node) without the publications and retractions of
 * the items in `touched` (LiveTrack.supersedes: a live event newer than the entry touched them),
 * so that the older entry is not applied after the live one — it would bring back an older
 * version or a retracted item. Returns the event itself when nothing is dropped, and how many
 * children were dropped.
 */
export function withoutSuperseded(event: Element | undefined, touched: ReadonlySet<string> | undefined): { event: Element | undefined; dropped: number } {
  const items = event?.getChild('items');
  if (!event || !items || !touched || touched.size === 0) return { event, dropped: 0 };
  const isTouched = (c: Element | string): boolean => typeof c !== 'string' && (c.name === 'item' || c.name === 'retract') && touched.has(String(c.attrs.id));
  const dropped = items.children.filter(isTouched).length;
  if (dropped === 0) return { event, dropped };
  const kept = new Element('items', items.attrs);
  for (const c of items.children) if (!isTouched(c)) kept.children.push(c);
  const copy = new Element(event.name, event.attrs);
  copy.cnode(kept);
  return { event: copy, dropped };
}

/**
 * The newest of `anchors` (item ids read, oldest first) that no live event has touched (`touched`,
 * LiveTrack.liveItems), dropping the touched ones from the end; undefined (page from the start)
 * when none is left.
 */
export function stableAnchor(anchors: string[], touched: ReadonlyMap<string, number> | undefined): string | undefined {
  while (anchors.length > 0 && touched?.has(anchors[anchors.length - 1] as string)) anchors.pop();
  return anchors.at(-1);
}
