// In-memory Store: the reference implementation of the contract, for unit tests and
// throw-away demos. Nothing survives the process.

import type { Affiliation, ArchiveEntry, Item, NodeRecord, Subscription } from '../pubsub/types.ts';
import { addLeaseEnd, archiveBounds, archiveId, bareJid, checkNamespace, itemExpiryOf, namedArchiveIds, pageOf, type ArchiveQuery, type ItemQuery, type Page, type PageRequest, type StateSpace, type Store, type TimerIndex } from './store.ts';

interface NodeState {
  record: NodeRecord;
  affiliations: Map<string, Affiliation>;
  subscriptions: Map<string, Subscription>; // key jid\0subid
  items: Map<string, Item>; // insertion order = publication order
  archive: ArchiveEntry[]; // in id order
  archiveSeq: number;
}

const clone = <T>(value: T): T => structuredClone(value);

export class MemoryStore implements Store {
  private readonly nodes = new Map<string, NodeState>();
  /** State spaces' entries by `namespace\0key`. */
  private readonly stateEntries = new Map<string, string>();

  async open(): Promise<void> {}
  async close(): Promise<void> {}

  state(namespace: string): StateSpace {
    checkNamespace(namespace);
    const base = `${namespace}\0`;
    const entries = this.stateEntries;
    return {
      get: async (k) => entries.get(base + k),
      getMany: async (keys) => keys.map((k) => entries.get(base + k)),
      batch: async (ops) => {
        for (const op of ops) {
          if (op.type === 'put') entries.set(base + op.key, op.value);
          else entries.delete(base + op.key);
        }
      },
      swap: async (k, expected, next) => {
        if (entries.get(base + k) !== expected) return false;
        if (next === undefined) entries.delete(base + k);
        else entries.set(base + k, next);
        return true;
      },
      async *range(prefix, options = {}) {
        const keys = [...entries.keys()].filter((k) => k.startsWith(base + prefix)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        for (const k of keys.slice(0, options.limit ?? keys.length)) yield [k.slice(base.length), entries.get(k) as string];
      },
    };
  }

  async getNode(id: string): Promise<NodeRecord | undefined> {
    const state = this.nodes.get(id);
    return state && clone(state.record);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return [...this.nodes.values()].map((s) => clone(s.record)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async pageNodes(page: PageRequest): Promise<Page<NodeRecord>> {
    const nodes = await this.listNodes();
    return pageOf(nodes, page, (uid) => sortedPosition(nodes, (n) => n.id, uid)) as Page<NodeRecord>;
  }

  async putNode(node: NodeRecord): Promise<void> {
    const state = this.nodes.get(node.id);
    if (state) state.record = clone(node);
    else this.nodes.set(node.id, { record: clone(node), affiliations: new Map(), subscriptions: new Map(), items: new Map(), archive: [], archiveSeq: 0 });
  }

  async deleteNode(id: string): Promise<void> {
    this.nodes.delete(id);
  }

  async getAffiliations(node: string): Promise<Map<string, Affiliation>> {
    return new Map(this.nodes.get(node)?.affiliations);
  }

  async getAffiliationsOf(jid: string): Promise<Array<{ node: string; affiliation: Affiliation }>> {
    const out: Array<{ node: string; affiliation: Affiliation }> = [];
    for (const [node, state] of this.nodes) {
      const affiliation = state.affiliations.get(jid);
      if (affiliation) out.push({ node, affiliation });
    }
    return out.sort((a, b) => (a.node < b.node ? -1 : 1));
  }

  async setAffiliation(node: string, jid: string, affiliation: Affiliation): Promise<void> {
    const state = this.nodes.get(node);
    if (!state) return;
    if (affiliation === 'none') state.affiliations.delete(jid);
    else state.affiliations.set(jid, affiliation);
  }

  async getSubscriptions(node: string): Promise<Subscription[]> {
    return [...(this.nodes.get(node)?.subscriptions.values() ?? [])].map(clone);
  }

  async getSubscriptionsOf(bare: string): Promise<Subscription[]> {
    const out: Subscription[] = [];
    for (const state of this.nodes.values()) {
      for (const sub of state.subscriptions.values()) if (bareJid(sub.jid) === bare) out.push(clone(sub));
    }
    return out;
  }

  async putSubscription(sub: Subscription): Promise<void> {
    this.nodes.get(sub.node)?.subscriptions.set(`${sub.jid}\0${sub.subid}`, clone(sub));
  }

  async deleteSubscription(node: string, jid: string, subid: string): Promise<void> {
    this.nodes.get(node)?.subscriptions.delete(`${jid}\0${subid}`);
  }

  async publishItem(node: string, item: Item, options: { keep: number; archive?: { keep: number } }): Promise<{ dropped: string[]; archiveId?: string }> {
    const state = this.nodes.get(node);
    if (!state) return { dropped: [] };
    state.items.delete(item.id);
    state.items.set(item.id, clone(item));
    const dropped = await this.trimItems(node, options.keep);
    if (!options.archive) return { dropped };
    return { dropped, archiveId: await this.appendArchive(node, { stamp: item.published, item }, options.archive.keep) };
  }

  async publishMany(node: string, items: Item[], options: { keep: number; archive?: { keep: number } }): Promise<{ dropped: string[]; archiveIds: string[] }> {
    const dropped: string[] = [];
    const archiveIds: string[] = [];
    for (const item of items) {
      const one = await this.publishItem(node, item, options);
      dropped.push(...one.dropped);
      if (one.archiveId !== undefined) archiveIds.push(one.archiveId);
    }
    return { dropped, archiveIds };
  }

  async putItem(node: string, item: Item, keep: number): Promise<string[]> {
    return (await this.publishItem(node, item, { keep })).dropped;
  }

  async retractItems(node: string, ids: string[], options: { archive?: { stamp: number; keep: number } } = {}): Promise<{ retracted: string[]; archiveId?: string }> {
    const state = this.nodes.get(node);
    if (!state) return { retracted: [] };
    const wanted = new Set(ids);
    const retracted = [...state.items.keys()].filter((id) => wanted.has(id));
    for (const id of retracted) state.items.delete(id);
    if (!options.archive || retracted.length === 0) return { retracted };
    return { retracted, archiveId: await this.appendArchive(node, { stamp: options.archive.stamp, retracted }, options.archive.keep) };
  }

  async timerIndex(): Promise<TimerIndex> {
    const itemExpiry = new Map<string, number>();
    const leaseEnds = new Map<string, number>();
    for (const [id, state] of this.nodes) {
      const expire = itemExpiryOf(state.record);
      if (expire !== undefined) itemExpiry.set(id, expire);
      for (const sub of state.subscriptions.values()) addLeaseEnd(leaseEnds, id, sub.options?.expire);
    }
    return { itemExpiry, leaseEnds };
  }

  async getItems(node: string, query: ItemQuery = {}): Promise<Item[]> {
    const items = [...(this.nodes.get(node)?.items.values() ?? [])];
    let selected = items;
    if (query.ids) {
      const wanted = new Set(query.ids);
      selected = items.filter((i) => wanted.has(i.id));
    }
    if (query.max !== undefined) selected = query.max <= 0 ? [] : selected.slice(-query.max);
    return selected.map(clone);
  }

  async countItems(node: string): Promise<number> {
    return this.nodes.get(node)?.items.size ?? 0;
  }

  async pageItemIds(node: string, page: PageRequest): Promise<Page<string> | undefined> {
    const ids = [...(this.nodes.get(node)?.items.keys() ?? [])];
    return pageOf(ids, page, (uid) => {
      const at = ids.indexOf(uid);
      return at === -1 ? undefined : at;
    });
  }

  async deleteItem(node: string, id: string): Promise<boolean> {
    return (await this.retractItems(node, [id])).retracted.length > 0;
  }

  async trimItems(node: string, keep: number): Promise<string[]> {
    const state = this.nodes.get(node);
    const dropped: string[] = [];
    if (!state) return dropped;
    for (const id of state.items.keys()) {
      if (state.items.size - dropped.length <= keep) break;
      dropped.push(id);
    }
    for (const id of dropped) state.items.delete(id);
    return dropped;
  }

  async purgeItems(node: string, options: { archive?: { stamp: number; keep: number } } = {}): Promise<{ archiveId?: string }> {
    const state = this.nodes.get(node);
    if (!state) return {};
    state.items.clear();
    return options.archive ? { archiveId: await this.appendArchive(node, { stamp: options.archive.stamp, purged: true }, options.archive.keep) } : {};
  }

  async appendArchive(node: string, entry: Omit<ArchiveEntry, 'id'>, keep: number): Promise<string> {
    const state = this.nodes.get(node);
    if (!state) return '';
    const id = archiveId(entry.stamp, ++state.archiveSeq);
    state.archive.push(clone({ ...entry, id }));
    state.archive.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (state.archive.length > keep) state.archive.splice(0, state.archive.length - keep);
    return id;
  }

  async pageArchive(node: string, query: ArchiveQuery, page: PageRequest): Promise<Page<ArchiveEntry> | undefined> {
    const archive = this.nodes.get(node)?.archive ?? [];
    const known = new Set(archive.map((e) => e.id));
    if (!namedArchiveIds(query, page).every((id) => known.has(id))) return undefined;
    const { above, below } = archiveBounds(query);
    const wanted = query.ids && new Set(query.ids);
    const selected = archive.filter((e) => e.id > above && e.id < below && (!wanted || wanted.has(e.id)));
    const result = pageOf(selected, page, (uid) => sortedPosition(selected, (e) => e.id, uid)) as Page<ArchiveEntry>;
    return { ...result, entries: result.entries.map(clone) };
  }
}

/** Where a UID sits in a list sorted by id: its index, or between its neighbours. */
function sortedPosition<T>(list: readonly T[], id: (t: T) => string, uid: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (id(list[mid] as T) < uid) lo = mid + 1;
    else hi = mid;
  }
  return list[lo] !== undefined && id(list[lo] as T) === uid ? lo : lo - 0.5;
}
