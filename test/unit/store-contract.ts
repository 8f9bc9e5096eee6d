// The Store contract: every backend must pass these. Call storeContract(name, factory) from a
// backend's test file; `reopen` (when given) checks that state survives closing the store.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_NODE_CONFIG } from '../../src/pubsub/node-config.ts';
import type { Item, NodeRecord } from '../../src/pubsub/types.ts';
import type { Store } from '../../src/store/store.ts';

export interface StoreFactory {
  /** A fresh, empty, opened store. */
  create(): Promise<Store>;
  /** Close and open the same store again (durable backends only). */
  reopen?(store: Store): Promise<Store>;
}

const node = (id: string): NodeRecord => ({ id, config: { ...DEFAULT_NODE_CONFIG, title: `t-${id}` }, creator: 'alice@a.test', created: 1000 });
const item = (id: string, payload = `<p xmlns="x">${id}</p>`): Item => ({ id, payload, publisher: 'alice@a.test', published: 2000 });
const ids = (items: Item[]): string[] => items.map((i) => i.id);

export function storeContract(name: string, factory: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    it('creates, lists, updates and deletes nodes', async () => {
      const s = await factory.create();
      await s.putNode(node('b'));
      await s.putNode(node('a'));
      assert.deepEqual((await s.listNodes()).map((n) => n.id).sort(), ['a', 'b']);
      await s.putNode({ ...node('a'), config: { ...DEFAULT_NODE_CONFIG, title: 'changed' } });
      assert.equal((await s.getNode('a'))?.config.title, 'changed');
      await s.deleteNode('a');
      assert.equal(await s.getNode('a'), undefined);
      assert.deepEqual((await s.listNodes()).map((n) => n.id), ['b']);
      await s.close();
    });

    it('keeps affiliations per node with a reverse index by JID', async () => {
      const s = await factory.create();
      await s.putNode(node('n1'));
      await s.putNode(node('n2'));
      await s.setAffiliation('n1', 'bob@b.test', 'member');
      await s.setAffiliation('n2', 'bob@b.test', 'publisher');
      await s.setAffiliation('n1', 'carol@b.test', 'outcast');
      assert.deepEqual([...(await s.getAffiliations('n1'))].sort(), [
        ['bob@b.test', 'member'],
        ['carol@b.test', 'outcast'],
      ]);
      assert.deepEqual(await s.getAffiliationsOf('bob@b.test'), [
        { node: 'n1', affiliation: 'member' },
        { node: 'n2', affiliation: 'publisher' },
      ]);
      await s.setAffiliation('n1', 'bob@b.test', 'none');
      assert.equal((await s.getAffiliations('n1')).has('bob@b.test'), false);
      await s.deleteNode('n2');
      assert.deepEqual(await s.getAffiliationsOf('bob@b.test'), []);
      await s.close();
    });

    it('keeps subscriptions per node and per bare JID (any resource)', async () => {
      const s = await factory.create();
      await s.putNode(node('n1'));
      await s.putNode(node('n2'));
      await s.putSubscription({ node: 'n1', jid: 'bob@b.test', subid: 's1', state: 'subscribed' });
      await s.putSubscription({ node: 'n2', jid: 'bob@b.test/phone', subid: 's2', state: 'subscribed' });
      await s.putSubscription({ node: 'n1', jid: 'carol@b.test', subid: 's3', state: 'pending' });
      assert.deepEqual((await s.getSubscriptions('n1')).map((x) => x.subid).sort(), ['s1', 's3']);
      assert.deepEqual((await s.getSubscriptionsOf('bob@b.test')).map((x) => x.subid).sort(), ['s1', 's2']);
      await s.deleteSubscription('n1', 'bob@b.test', 's1');
      assert.deepEqual((await s.getSubscriptionsOf('bob@b.test')).map((x) => x.subid), ['s2']);
      await s.deleteNode('n2');
      assert.deepEqual(await s.getSubscriptionsOf('bob@b.test'), []);
      await s.close();
    });

    it('orders items by publication, a republished id becomes newest, and trims the oldest', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (const id of ['a', 'b', 'c']) assert.deepEqual(await s.putItem('n', item(id), 10), []);
      await s.putItem('n', item('a', '<p xmlns="x">a2</p>'), 10);
      assert.deepEqual(ids(await s.getItems('n')), ['b', 'c', 'a']);
      assert.equal((await s.getItems('n', { ids: ['a'] }))[0]?.payload, '<p xmlns="x">a2</p>');
      assert.equal(await s.countItems('n'), 3);
      assert.deepEqual(await s.putItem('n', item('d'), 3), ['b']);
      assert.deepEqual(ids(await s.getItems('n')), ['c', 'a', 'd']);
      assert.deepEqual(ids(await s.getItems('n', { max: 2 })), ['a', 'd']);
      assert.deepEqual(ids(await s.getItems('n', { ids: ['d', 'zz', 'c'] })), ['c', 'd']);
      assert.deepEqual(ids(await s.getItems('n', { max: 0 })), []);
      assert.deepEqual(await s.trimItems('n', 1), ['c', 'a']);
      assert.equal(await s.countItems('n'), 1);
      await s.close();
    });

    it('replacing an item at the limit keeps the others', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      await s.putItem('n', item('a'), 2);
      await s.putItem('n', item('b'), 2);
      assert.deepEqual(await s.putItem('n', item('a'), 2), []);
      assert.deepEqual(ids(await s.getItems('n')), ['b', 'a']);
      await s.close();
    });

    it('deletes and purges items and counts them', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      for (const id of ['a', 'b', 'c']) await s.putItem('n', item(id), 10);
      assert.equal(await s.deleteItem('n', 'b'), true);
      assert.equal(await s.deleteItem('n', 'b'), false);
      assert.deepEqual(ids(await s.getItems('n')), ['a', 'c']);
      assert.equal(await s.countItems('n'), 2);
      await s.purgeItems('n');
      assert.deepEqual(await s.getItems('n'), []);
      assert.equal(await s.countItems('n'), 0);
      await s.putItem('n', item('e'), 10);
      assert.deepEqual(ids(await s.getItems('n')), ['e']);
      await s.close();
    });

    it('deleting a node removes its items; a new node of the same name starts empty', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      await s.putItem('n', item('a'), 10);
      await s.setAffiliation('n', 'bob@b.test', 'member');
      await s.deleteNode('n');
      await s.putNode(node('n'));
      assert.deepEqual(await s.getItems('n'), []);
      assert.equal(await s.countItems('n'), 0);
      assert.equal((await s.getAffiliations('n')).size, 0);
      await s.close();
    });

    it('keeps concurrent publishes to one node consistent', async () => {
      const s = await factory.create();
      await s.putNode(node('n'));
      await Promise.all(Array.from({ length: 50 }, (_, i) => s.putItem('n', item(`i${i}`), 20)));
      assert.equal(await s.countItems('n'), 20);
      assert.deepEqual(ids(await s.getItems('n')), Array.from({ length: 20 }, (_, i) => `i${i + 30}`));
      await s.close();
    });

    if (factory.reopen) {
      const reopen = factory.reopen;
      it('survives close and reopen', async () => {
        let s = await factory.create();
        await s.putNode(node('n'));
        await s.setAffiliation('n', 'bob@b.test', 'publisher');
        await s.putSubscription({ node: 'n', jid: 'bob@b.test/x', subid: 's', state: 'subscribed' });
        await s.putItem('n', item('a'), 10);
        await s.putItem('n', item('b'), 10);
        s = await reopen(s);
        assert.equal((await s.getNode('n'))?.config.title, 't-n');
        assert.equal((await s.getAffiliations('n')).get('bob@b.test'), 'publisher');
        assert.equal((await s.getSubscriptionsOf('bob@b.test'))[0]?.jid, 'bob@b.test/x');
        assert.deepEqual(ids(await s.getItems('n')), ['a', 'b']);
        await s.putItem('n', item('c'), 10);
        assert.deepEqual(ids(await s.getItems('n')), ['a', 'b', 'c']);
        await s.close();
      });
    }
  });
}
