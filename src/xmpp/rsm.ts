// XEP-0059 Result Set Management on the wire: a <set/> in a request becomes a typed
// PageRequest, a Page becomes the <set/> of the reply. Knows nothing of what is paged.

import { Element } from 'ltx';
import type { Page, PageRequest } from '../store/store.ts';
import { badRequest } from './errors.ts';
import { NS } from './ns.ts';

function count(el: Element | undefined, name: string): number | undefined {
  if (!el) return undefined;
  const text = el.getText().trim();
  if (!/^\d{1,9}$/.test(text)) throw badRequest(`RSM <${name}/> must be a non-negative integer (got '${text}')`);
  return Number(text);
}

/**
 * The page asked for by the <set xmlns='http://jabber.org/protocol/rsm'/> child of `parent`, or
 * undefined when there is none. A missing <max/> means `limit`; a larger one is capped to it.
 */
export function parseRsm(parent: Element, limit: number): PageRequest | undefined {
  const set = parent.getChild('set', NS.RSM);
  if (!set) return undefined;
  const max = count(set.getChild('max'), 'max');
  const index = count(set.getChild('index'), 'index');
  const after = set.getChild('after');
  const before = set.getChild('before');
  if ([after, before, index].filter((x) => x !== undefined).length > 1) throw badRequest('RSM: use at most one of <after/>, <before/> and <index/>');
  const page: PageRequest = { max: Math.min(max ?? limit, limit) };
  if (after) {
    const uid = after.getText();
    if (uid === '') throw badRequest('RSM <after/> needs a UID');
    page.after = uid;
  }
  if (before) page.before = before.getText();
  if (index !== undefined) page.index = index;
  return page;
}

/** The <set/> describing a page whose entries have these UIDs. */
export function rsmResult(page: Page<unknown>, uids: string[]): Element {
  const set = new Element('set', { xmlns: NS.RSM });
  const first = uids[0];
  const last = uids[uids.length - 1];
  if (first !== undefined && last !== undefined) {
    set.c('first', { index: String(page.firstIndex) }).t(first);
    set.c('last').t(last);
  }
  set.c('count').t(String(page.count));
  return set;
}

/** Most bytes (as `size` counts them) of entries one page answers with: a page beyond is cut short, as XEP-0059 §2.1 allows. */
export const PAGE_BYTES = 2 * 1024 * 1024;

/**
 * `page` cut to the entries whose sizes (`size`, bytes) fit in `budget` — at least one — keeping
 * the first ones of a forward page and the last ones of a `before` page (`backwards`), so that
 * the client's next request (after the last, or before the first) goes on where this one
 * stopped. A cut page is not complete; its firstIndex moves with the entries dropped before it.
 * The page itself when everything fits.
 */
export function fitPage<T>(page: Page<T>, size: (entry: T) => number, backwards: boolean, budget = PAGE_BYTES): Page<T> {
  const { entries } = page;
  let bytes = 0;
  let kept = 0;
  for (let i = 0; i < entries.length; i++) {
    bytes += size(entries[backwards ? entries.length - 1 - i : i] as T);
    if (kept > 0 && bytes > budget) break;
    kept++;
  }
  if (kept === entries.length) return page;
  return backwards
    ? { entries: entries.slice(entries.length - kept), count: page.count, firstIndex: page.firstIndex + entries.length - kept, complete: false }
    : { entries: entries.slice(0, kept), count: page.count, firstIndex: page.firstIndex, complete: false };
}
