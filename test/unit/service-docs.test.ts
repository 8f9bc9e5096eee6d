// The pub/sub core's doc comments keep their promise: every public method of PubsubService has
// one that names the errors it raises ("Errors: `name`, ..." or "Errors: none"), every name is a
// PubsubError name, and each error `publish` documents is driven here and raised — so the list
// cannot name an error publish does not raise, nor leave out one this test finds.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import ts from 'typescript';
import { PUBSUB_ERROR_NAMES, PubsubError, type PubsubErrorName } from '../../src/pubsub/errors.ts';
import { PubsubService, type PublishRequest } from '../../src/pubsub/service.ts';
import type { NodeConfig } from '../../src/pubsub/types.ts';
import { MemoryStore } from '../../src/store/memory.ts';

const SOURCE = new URL('../../src/pubsub/service.ts', import.meta.url);

/** Public method name -> its doc comment text (undefined: none). */
function publicMethodDocs(): Map<string, string | undefined> {
  const file = ts.createSourceFile('service.ts', readFileSync(SOURCE, 'utf8'), ts.ScriptTarget.Latest, true);
  const out = new Map<string, string | undefined>();
  const visit = (node: ts.Node): void => {
    if (ts.isClassDeclaration(node) && node.name?.text === 'PubsubService') {
      for (const member of node.members) {
        if (!(ts.isMethodDeclaration(member) || ts.isConstructorDeclaration(member))) continue;
        if (ts.getCombinedModifierFlags(member) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
        const name = ts.isConstructorDeclaration(member) ? 'constructor' : member.name.getText(file);
        const docs = ts.getJSDocCommentsAndTags(member).filter(ts.isJSDoc);
        out.set(name, docs.length ? docs.map((d) => d.getText(file)).join('\n') : undefined);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

/** The error names after "Errors:" in a doc comment (empty for "Errors: none"); undefined when it names none at all. */
function documentedErrors(doc: string): Set<string> | undefined {
  const at = doc.indexOf('Errors');
  if (at === -1) return undefined;
  const text = doc.slice(at);
  const names = [...text.matchAll(/`([a-z-]+)`/g)].map((m) => m[1] as string);
  if (names.length === 0 && !/^Errors(?: \(with a node\))?: none/.test(text)) return undefined;
  return new Set(names);
}

describe('PubsubService doc comments', () => {
  it('every public method documents the errors it raises, by PubsubError name', () => {
    const docs = publicMethodDocs();
    assert.ok(docs.size > 25, `found only ${docs.size} public methods: the parser lost its way`);
    const known = new Set<string>(PUBSUB_ERROR_NAMES);
    for (const [name, doc] of docs) {
      assert.ok(doc, `${name}() has no doc comment`);
      const errors = documentedErrors(doc);
      assert.ok(errors, `${name}()'s doc comment does not say which errors it raises ("Errors: ..." or "Errors: none")`);
      for (const e of errors) assert.ok(known.has(e), `${name}() documents '${e}', which is not a PubsubError name`);
    }
  });

  it('publish raises each error its doc comment names, and the test drives no other', async () => {
    let clock = 1_000_000;
    const service = new PubsubService({ store: new MemoryStore(), mayCreateNodes: () => true, notifier: () => undefined, now: () => clock, limits: { publishRate: { perSecond: 1, burst: 1 } } });
    const item = (payload?: string, id?: string): PublishRequest => ({ item: { ...(id ? { id } : {}), ...(payload !== undefined ? { payload } : {}) } });
    // Each case publishes as a JID of its own (a fresh rate token), on a node of its own.
    let n = 0;
    const publishOn = async (config: Partial<NodeConfig>, ...requests: PublishRequest[]): Promise<unknown> => {
      const actor = `publisher${++n}@a.test/r`;
      const id = await service.create(actor, undefined, config);
      for (const request of requests.slice(0, -1)) {
        await service.publish(actor, id, request);
        clock += 1000; // the next rate token
      }
      return service.publish(actor, id, requests.at(-1) as PublishRequest);
    };
    const cases: Array<[PubsubErrorName, () => Promise<unknown>]> = [
      ['nodeid-required', () => service.publish('someone@a.test/r', '', item('<x/>'))],
      ['item-not-found', () => service.publish('someone@a.test/r', 'no-such-node', item('<x/>'))],
      ['forbidden', async () => service.publish('stranger@b.test/r', await service.create('owner@a.test/r', undefined, {}), item('<x/>'))],
      [
        'rate-limited',
        async () => {
          const actor = 'fast@a.test/r';
          const id = await service.create(actor, undefined, {});
          await service.publish(actor, id, item('<x/>'));
          return service.publish(actor, id, item('<y/>'));
        },
      ],
      ['item-required', () => publishOn({}, {})],
      ['payload-required', () => publishOn({}, item())],
      ['item-forbidden', () => publishOn({ persistItems: false, deliverPayloads: false }, item())],
      ['precondition-not-met', () => publishOn({}, { ...item('<x/>'), preconditions: { accessModel: 'whitelist' } })],
      ['payload-too-big', () => publishOn({ maxPayloadSize: 50 }, item(`<x>${'y'.repeat(100)}</x>`))],
      ['node-full', () => publishOn({ maxItems: 1, publishNodeFull: 'reject' }, item('<x/>', 'a'), item('<x/>', 'b'))],
      ['not-acceptable', () => publishOn({}, item('<x/>', 'i'.repeat(1024)))],
    ];
    const raised = new Set<string>();
    for (const [expected, run] of cases) {
      await assert.rejects(run(), (err: unknown) => {
        assert.ok(err instanceof PubsubError, `${expected}: expected a PubsubError, got ${String(err)}`);
        assert.equal(err.condition, expected);
        return true;
      });
      raised.add(expected);
    }
    const documented = documentedErrors(publicMethodDocs().get('publish') ?? '');
    assert.deepEqual([...(documented ?? [])].sort(), [...raised].sort(), "publish's doc comment names exactly the errors driven here");
  });
});
