// Embedded durable Store on LevelDB (classic-level: prebuilt binaries, no server). One database
// under dataDir; every multi-key change is one atomic batch, so a crash (kill -9) between two
// writes never leaves half a change. With `sync: false` (default) an acknowledged write survives
// a process crash (it is in the OS before the call resolves); `sync: true` also fsyncs, for
// power loss, at a cost per write.
//
// Key layout ('\0' never occurs in JIDs, node ids or item ids, which are XML text):
//   n\0<node>                          NodeRecord JSON
//   m\0<node>                          {seq, count} item bookkeeping
//   a\0<node>\0<jid>                   affiliation            A\0<jid>\0<node>  reverse index
//   s\0<node>\0<jid>\0<subid>          Subscription JSON      S\0<bare>\0<node>\0<jid>\0<subid>
//   i\0<node>\0<itemId>                {seq, item} JSON
//   o\0<node>\0<seq as 12 hex digits>  itemId (publication order)

import { ClassicLevel } from 'classic-level';
import type { Affiliation, Item, NodeRecord, Subscription } from '../pubsub/types.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { bareJid, type ItemQuery, type Store } from './store.ts';

const SEP = '\0';
const key = (...parts: string[]): string => parts.join(SEP);
const seqKey = (seq: number): string => seq.toString(16).padStart(12, '0');

interface ItemMeta {
  seq: number;
  count: number;
}
interface StoredItem {
  seq: number;
  item: Item;
}
type BatchOp = { type: 'put'; key: string; value: string } | { type: 'del'; key: string };

export interface LevelStoreOptions {
  sync?: boolean;
}

export class LevelStore implements Store {
  private readonly db: ClassicLevel<string, string>;
  private readonly sync: boolean;
  private readonly nodeLocks = new KeyedMutex();

  constructor(location: string, options: LevelStoreOptions = {}) {
    this.db = new ClassicLevel<string, string>(location, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    this.sync = options.sync ?? false;
  }

  async open(): Promise<void> {
    await this.db.open();
  }

  async close(): Promise<void> {
    await this.nodeLocks.idle();
    await this.db.close();
  }

  private async batch(ops: BatchOp[]): Promise<void> {
    if (ops.length > 0) await this.db.batch(ops, { sync: this.sync });
  }

  private async json<T>(k: string): Promise<T | undefined> {
    const value = await this.db.get(k);
    return value === undefined ? undefined : (JSON.parse(value) as T);
  }

  /** Entries whose key starts with prefix + SEP, in key order. */
  private async *range(prefix: string, options: { reverse?: boolean; limit?: number } = {}): AsyncGenerator<[string, string]> {
    const gt = prefix + SEP;
    const lt = prefix + SEP + '\uffff';
    for await (const entry of this.db.iterator({ gt, lt, reverse: options.reverse ?? false, limit: options.limit ?? -1 })) {
      yield entry;
    }
  }

  private async keysIn(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const k of this.db.keys({ gt: prefix + SEP, lt: prefix + SEP + '\uffff' })) keys.push(k);
    return keys;
  }

  async getNode(id: string): Promise<NodeRecord | undefined> {
    return this.json<NodeRecord>(key('n', id));
  }

  async listNodes(): Promise<NodeRecord[]> {
    const nodes: NodeRecord[] = [];
    for await (const [, value] of this.range('n')) nodes.push(JSON.parse(value) as NodeRecord);
    return nodes;
  }

  async putNode(node: NodeRecord): Promise<void> {
    await this.db.put(key('n', node.id), JSON.stringify(node), { sync: this.sync });
  }

  async deleteNode(id: string): Promise<void> {
    await this.nodeLocks.run(id, async () => {
      const ops: BatchOp[] = [
        { type: 'del', key: key('n', id) },
        { type: 'del', key: key('m', id) },
      ];
      for await (const [k] of this.range(key('a', id))) {
        const jid = k.slice(key('a', id).length + 1);
        ops.push({ type: 'del', key: k }, { type: 'del', key: key('A', jid, id) });
      }
      for await (const [k, v] of this.range(key('s', id))) {
        const sub = JSON.parse(v) as Subscription;
        ops.push({ type: 'del', key: k }, { type: 'del', key: key('S', bareJid(sub.jid), id, sub.jid, sub.subid) });
      }
      for (const k of await this.keysIn(key('i', id))) ops.push({ type: 'del', key: k });
      for (const k of await this.keysIn(key('o', id))) ops.push({ type: 'del', key: k });
      await this.batch(ops);
    });
  }

  async getAffiliations(node: string): Promise<Map<string, Affiliation>> {
    const out = new Map<string, Affiliation>();
    const prefixLength = key('a', node).length + 1;
    for await (const [k, v] of this.range(key('a', node))) out.set(k.slice(prefixLength), v as Affiliation);
    return out;
  }

  async getAffiliationsOf(jid: string): Promise<Array<{ node: string; affiliation: Affiliation }>> {
    const out: Array<{ node: string; affiliation: Affiliation }> = [];
    const prefixLength = key('A', jid).length + 1;
    for await (const [k, v] of this.range(key('A', jid))) out.push({ node: k.slice(prefixLength), affiliation: v as Affiliation });
    return out;
  }

  async setAffiliation(node: string, jid: string, affiliation: Affiliation): Promise<void> {
    if (affiliation === 'none') {
      await this.batch([
        { type: 'del', key: key('a', node, jid) },
        { type: 'del', key: key('A', jid, node) },
      ]);
    } else {
      await this.batch([
        { type: 'put', key: key('a', node, jid), value: affiliation },
        { type: 'put', key: key('A', jid, node), value: affiliation },
      ]);
    }
  }

  async getSubscriptions(node: string): Promise<Subscription[]> {
    const out: Subscription[] = [];
    for await (const [, v] of this.range(key('s', node))) out.push(JSON.parse(v) as Subscription);
    return out;
  }

  async getSubscriptionsOf(bare: string): Promise<Subscription[]> {
    const out: Subscription[] = [];
    for await (const [, v] of this.range(key('S', bare))) out.push(JSON.parse(v) as Subscription);
    return out;
  }

  async putSubscription(sub: Subscription): Promise<void> {
    const value = JSON.stringify(sub);
    await this.batch([
      { type: 'put', key: key('s', sub.node, sub.jid, sub.subid), value },
      { type: 'put', key: key('S', bareJid(sub.jid), sub.node, sub.jid, sub.subid), value },
    ]);
  }

  async deleteSubscription(node: string, jid: string, subid: string): Promise<void> {
    await this.batch([
      { type: 'del', key: key('s', node, jid, subid) },
      { type: 'del', key: key('S', bareJid(jid), node, jid, subid) },
    ]);
  }

  private async meta(node: string): Promise<ItemMeta> {
    return (await this.json<ItemMeta>(key('m', node))) ?? { seq: 0, count: 0 };
  }

  async putItem(node: string, item: Item, keep: number): Promise<string[]> {
    return this.nodeLocks.run(node, async () => {
      const meta = await this.meta(node);
      const ops: BatchOp[] = [];
      const previous = await this.json<StoredItem>(key('i', node, item.id));
      if (previous) ops.push({ type: 'del', key: key('o', node, seqKey(previous.seq)) });
      else meta.count += 1;
      meta.seq += 1;
      ops.push(
        { type: 'put', key: key('i', node, item.id), value: JSON.stringify({ seq: meta.seq, item } satisfies StoredItem) },
        { type: 'put', key: key('o', node, seqKey(meta.seq)), value: item.id },
      );
      const dropped = await this.collectTrim(node, meta, keep, ops, previous?.seq);
      ops.push({ type: 'put', key: key('m', node), value: JSON.stringify(meta) });
      await this.batch(ops);
      return dropped;
    });
  }

  /** Adds deletions of the oldest items beyond `keep` to ops and updates meta.count. */
  private async collectTrim(node: string, meta: ItemMeta, keep: number, ops: BatchOp[], skipSeq?: number): Promise<string[]> {
    const dropped: string[] = [];
    let excess = meta.count - keep;
    if (excess <= 0) return dropped;
    for await (const [k, id] of this.range(key('o', node))) {
      if (excess <= 0) break;
      if (skipSeq !== undefined && k === key('o', node, seqKey(skipSeq))) continue; // already replaced in this batch
      ops.push({ type: 'del', key: k }, { type: 'del', key: key('i', node, id) });
      dropped.push(id);
      excess -= 1;
    }
    meta.count -= dropped.length;
    return dropped;
  }

  async getItems(node: string, query: ItemQuery = {}): Promise<Item[]> {
    if (query.ids) {
      const found: StoredItem[] = [];
      const values = await this.db.getMany(query.ids.map((id) => key('i', node, id)));
      for (const value of values) if (value !== undefined) found.push(JSON.parse(value) as StoredItem);
      found.sort((a, b) => a.seq - b.seq);
      const items = found.map((s) => s.item);
      return query.max !== undefined ? (query.max <= 0 ? [] : items.slice(-query.max)) : items;
    }
    if (query.max !== undefined && query.max <= 0) return [];
    const ids: string[] = [];
    for await (const [, id] of this.range(key('o', node), { reverse: true, limit: query.max ?? -1 })) ids.push(id);
    ids.reverse();
    const values = await this.db.getMany(ids.map((id) => key('i', node, id)));
    const items: Item[] = [];
    for (const value of values) if (value !== undefined) items.push((JSON.parse(value) as StoredItem).item);
    return items;
  }

  async countItems(node: string): Promise<number> {
    return (await this.meta(node)).count;
  }

  async deleteItem(node: string, id: string): Promise<boolean> {
    return this.nodeLocks.run(node, async () => {
      const previous = await this.json<StoredItem>(key('i', node, id));
      if (!previous) return false;
      const meta = await this.meta(node);
      meta.count -= 1;
      await this.batch([
        { type: 'del', key: key('i', node, id) },
        { type: 'del', key: key('o', node, seqKey(previous.seq)) },
        { type: 'put', key: key('m', node), value: JSON.stringify(meta) },
      ]);
      return true;
    });
  }

  async trimItems(node: string, keep: number): Promise<string[]> {
    return this.nodeLocks.run(node, async () => {
      const meta = await this.meta(node);
      const ops: BatchOp[] = [];
      const dropped = await this.collectTrim(node, meta, keep, ops);
      if (dropped.length > 0) {
        ops.push({ type: 'put', key: key('m', node), value: JSON.stringify(meta) });
        await this.batch(ops);
      }
      return dropped;
    });
  }

  async purgeItems(node: string): Promise<void> {
    await this.nodeLocks.run(node, async () => {
      const meta = await this.meta(node);
      const ops: BatchOp[] = [];
      for (const k of await this.keysIn(key('i', node))) ops.push({ type: 'del', key: k });
      for (const k of await this.keysIn(key('o', node))) ops.push({ type: 'del', key: k });
      ops.push({ type: 'put', key: key('m', node), value: JSON.stringify({ seq: meta.seq, count: 0 }) });
      await this.batch(ops);
    });
  }
}
