// How our subscriptions to partners' nodes are configured (src/replication/subscription-setup.ts),
// against a service that answers as a given options form: what one configure asks for (digests
// on or off, packed and one copy as wanted, delivery resumed), what is recorded of what the
// service took, and what a later discovery sets again alone. The same against real Hermods over
// Prosody: test/wire/partner-digest.test.ts, partner-packed.test.ts, partner-one-copy.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SubscriptionSetup, type ConfiguredSubscription, type SubscriptionSetupOptions } from '../../src/replication/subscription-setup.ts';
import { IqError } from '../../src/xmpp/iq-error.ts';
import { ONE_COPY_FIELD, PACKED_FIELD } from '../../src/xmpp/subscribe-options-form.ts';
import { captureLog } from './capture-log.ts';

/** A service whose options form for our subscription holds `form`; configures are recorded (and refused while `refuse` says so). */
function service(form: Record<string, string>, refuse: (fields: Record<string, string>) => Error | undefined = () => undefined) {
  const configured: Array<Record<string, string>> = [];
  const client: SubscriptionSetupOptions['client'] = {
    subscriptionOptions: async () => new Map(Object.entries(form).map(([k, v]) => [k, [v]])),
    configureSubscription: async (_service, _node, fields) => {
      const err = refuse(fields);
      if (err) throw err;
      configured.push(fields);
      Object.assign(form, fields);
    },
  };
  return { client, configured, form };
}

const sub = (): ConfiguredSubscription => ({ service: 'pubsub.beta.test', node: '/tags/a' });
const HERMOD_FORM = { 'pubsub#deliver': '1', 'pubsub#digest': '0', 'pubsub#digest_frequency': '1000', [PACKED_FIELD]: '0', [ONE_COPY_FIELD]: '0' };

describe('configuring our subscriptions at partners’ services', () => {
  it('digests already right: the other fields still go out (delivery resumed, packed on), and the service ends as asked', async () => {
    const svc = service({ ...HERMOD_FORM, 'pubsub#digest': '1', 'pubsub#digest_frequency': '25', 'pubsub#deliver': '0', [PACKED_FIELD]: '0' });
    await new SubscriptionSetup({ client: svc.client, log: captureLog(), digestMs: 25, oneCopy: () => false }).setUp(sub());
    assert.deepEqual(svc.configured, [{ 'pubsub#deliver': '1', [PACKED_FIELD]: '1' }]);
    assert.deepEqual(svc.form, { ...HERMOD_FORM, 'pubsub#digest': '1', 'pubsub#digest_frequency': '25', 'pubsub#deliver': '1', [PACKED_FIELD]: '1' }, 'the subscription as the service now has it');
  });

  it('a service whose form has digests but no frequency: digests asked for without one', async () => {
    const svc = service({ 'pubsub#deliver': '1', 'pubsub#digest': '0' });
    await new SubscriptionSetup({ client: svc.client, log: captureLog(), digestMs: 25, oneCopy: () => false }).setUp(sub());
    assert.deepEqual(svc.configured, [{ 'pubsub#digest': '1' }]);
    const on = service({ 'pubsub#deliver': '1', 'pubsub#digest': 'true' });
    await new SubscriptionSetup({ client: on.client, log: captureLog(), digestMs: 25, oneCopy: () => false }).setUp(sub());
    assert.deepEqual(on.configured, [], 'on already (as "true"): nothing asked');
  });

  it('delivery paused and resumed after the configuring under way; refused (an error answer) and unknown (no answer) told apart', async () => {
    const order: string[] = [];
    const svc = service({ ...HERMOD_FORM });
    const setup = new SubscriptionSetup({ client: svc.client, log: captureLog(), oneCopy: () => false });
    let finish = (): void => undefined;
    const s: ConfiguredSubscription = { ...sub(), setUp: new Promise<void>((resolve) => (finish = resolve)).then(() => void order.push('set up')) };
    const paused = setup.setDelivery(s, false).then((r) => (order.push(`paused ${r}`), r));
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(order, [], 'waits for the configuring under way');
    finish();
    assert.equal(await paused, 'taken');
    assert.deepEqual(order, ['set up', 'paused taken']);
    assert.equal(svc.form['pubsub#deliver'], '0');
    const refusing = service({ ...HERMOD_FORM }, () => new IqError('feature-not-implemented', undefined, undefined, 'pubsub.beta.test', 'cancel'));
    assert.equal(await new SubscriptionSetup({ client: refusing.client, log: captureLog(), oneCopy: () => false }).setDelivery(sub(), false), 'refused');
    // No answer in time (the IQ caller's IqError, type wait) or a "not now" (a rate limit): it may have been applied.
    for (const [condition, type] of [['remote-server-timeout', 'wait'], ['policy-violation', 'wait']]) {
      const undecided = service({ ...HERMOD_FORM }, () => new IqError(condition as string, undefined, undefined, 'pubsub.beta.test', type));
      assert.equal(await new SubscriptionSetup({ client: undecided.client, log: captureLog(), oneCopy: () => false }).setDelivery(sub(), false), 'unknown', `${type}/${condition}`);
    }
    const silent = service({ ...HERMOD_FORM }, () => new Error('timeout'));
    const log = captureLog();
    assert.equal(await new SubscriptionSetup({ client: silent.client, log, oneCopy: () => false }).setDelivery(sub(), true), 'unknown');
    assert.ok(log.lines.some((l) => l.level === 'warn' && /resuming notification delivery failed/.test(l.msg)), 'a resume that failed is a warning');
  });

  it('digests at another frequency: asked again with the new one', async () => {
    const svc = service({ ...HERMOD_FORM, 'pubsub#digest': '1', 'pubsub#digest_frequency': '1000', [PACKED_FIELD]: '1' });
    await new SubscriptionSetup({ client: svc.client, log: captureLog(), digestMs: 25, oneCopy: () => false }).setUp(sub());
    assert.deepEqual(svc.configured, [{ 'pubsub#digest': '1', 'pubsub#digest_frequency': '25' }]);
  });

  it('one configure asks for digests, packed and one copy where offered; records what the service took', async () => {
    const svc = service({ ...HERMOD_FORM });
    const s = sub();
    await new SubscriptionSetup({ client: svc.client, log: captureLog(), digestMs: 25, oneCopy: () => true }).setUp(s);
    assert.deepEqual(svc.configured, [{ 'pubsub#digest': '1', 'pubsub#digest_frequency': '25', [PACKED_FIELD]: '1', [ONE_COPY_FIELD]: '1' }]);
    assert.deepEqual([s.packed, s.oneCopy], [true, true]);
  });

  it('nothing to change: no configure; options a service does not offer are never asked for', async () => {
    const svc = service({ 'pubsub#deliver': '1', 'pubsub#digest': '1', 'pubsub#digest_frequency': '25', [PACKED_FIELD]: '1' });
    const s = sub();
    await new SubscriptionSetup({ client: svc.client, log: captureLog(), digestMs: 25, oneCopy: () => true }).setUp(s);
    assert.deepEqual(svc.configured, [], 'digests at this frequency and packed already: nothing asked (a restart)');
    assert.deepEqual([s.packed, s.oneCopy], [true, undefined], 'one copy not offered: not recorded, not asked again');
    const other = service({ 'pubsub#deliver': '1' }); // another server: no digests, no Hermod fields
    await new SubscriptionSetup({ client: other.client, log: captureLog(), oneCopy: () => true }).setUp(sub());
    assert.deepEqual(other.configured, []);
  });

  it('turned off: digests with 0, packed with packed false, one copy where no longer wanted — each one an earlier run left on', async () => {
    const svc = service({ ...HERMOD_FORM, 'pubsub#digest': '1', [PACKED_FIELD]: '1', [ONE_COPY_FIELD]: '1' });
    const log = captureLog();
    const s = sub();
    await new SubscriptionSetup({ client: svc.client, log, digestMs: 0, packed: false, oneCopy: () => false }).setUp(s);
    assert.deepEqual(svc.configured, [{ 'pubsub#digest': '0', [PACKED_FIELD]: '0', [ONE_COPY_FIELD]: '0' }]);
    assert.deepEqual([s.packed, s.oneCopy], [false, false]);
    assert.ok(log.lines.some((l) => l.level === 'info' && /packed payloads turned off/.test(l.msg) && l.node === '/tags/a'));
  });

  it('delivery left paused by a drain is resumed in the same configure; a refusal then fails the follow', async () => {
    const svc = service({ ...HERMOD_FORM, 'pubsub#deliver': '0' });
    await new SubscriptionSetup({ client: svc.client, log: captureLog(), oneCopy: () => false }).setUp(sub());
    assert.equal(svc.configured[0]?.['pubsub#deliver'], '1');
    const refusing = service({ ...HERMOD_FORM, 'pubsub#deliver': '0' }, () => new IqError('not-acceptable', undefined, undefined, 'pubsub.beta.test', 'cancel'));
    await assert.rejects(new SubscriptionSetup({ client: refusing.client, log: captureLog(), oneCopy: () => false }).setUp(sub()), /resuming the paused delivery failed/);
  });

  it('options that got no answer fail the follow (delivery may be paused and only this read resumes it); options not offered do not', async () => {
    const unread = (err: Error): SubscriptionSetupOptions['client'] => ({ subscriptionOptions: async () => Promise.reject(err), configureSubscription: async () => undefined });
    for (const [condition, type] of [['remote-server-timeout', 'wait'], ['policy-violation', 'wait'], ['service-unavailable', 'cancel']]) {
      const client = unread(new IqError(condition as string, undefined, undefined, 'pubsub.beta.test', type));
      await assert.rejects(new SubscriptionSetup({ client, log: captureLog(), oneCopy: () => false }).setUp(sub()), /reading our subscription options got no answer/, `${type}/${condition}`);
    }
    // A form that cannot be read is an answer: one notification per item, as without options.
    await new SubscriptionSetup({ client: unread(new Error('a form field without var')), log: captureLog(), oneCopy: () => false }).setUp(sub());
    const log = captureLog();
    const s = sub();
    await new SubscriptionSetup({ client: unread(new IqError('feature-not-implemented', 'unsupported', undefined, 'pubsub.beta.test', 'cancel')), log, digestMs: 25, oneCopy: () => true }).setUp(s);
    assert.deepEqual([s.packed, s.oneCopy], [undefined, undefined], 'no options: none recorded, none asked again');
    assert.ok(log.lines.some((l) => l.level === 'debug' && /subscription options not available/.test(l.msg)));
  });

  it('a configure that does not take: what the service still has is recorded, and reconcile sets each option alone', async () => {
    let refusals = 1;
    const svc = service({ ...HERMOD_FORM, [PACKED_FIELD]: '1' }, () => (refusals-- > 0 ? new IqError('not-acceptable', undefined, undefined, 'pubsub.beta.test', 'modify') : undefined));
    const log = captureLog();
    const setup = new SubscriptionSetup({ client: svc.client, log, digestMs: 25, packed: false, oneCopy: () => true });
    const s = sub();
    await setup.setUp(s);
    assert.deepEqual(svc.configured, [], 'refused');
    assert.deepEqual([s.packed, s.oneCopy], [true, false], 'as the service still has them');
    assert.ok(log.lines.some((l) => l.level === 'warn' && /configuring our subscription failed/.test(l.msg)));
    await setup.reconcile(s, true);
    assert.deepEqual(new Set(svc.configured.map((c) => JSON.stringify(c))), new Set([JSON.stringify({ [ONE_COPY_FIELD]: '1' }), JSON.stringify({ [PACKED_FIELD]: '0' })]), 'each alone');
    assert.deepEqual([svc.form[ONE_COPY_FIELD], svc.form[PACKED_FIELD]], ['1', '0'], 'the subscription as the service now has it');
    assert.deepEqual([s.packed, s.oneCopy], [false, true]);
    await setup.reconcile(s, true);
    assert.equal(svc.configured.length, 2, 'nothing differs any more: nothing asked');
    const gone = { ...sub(), packed: true };
    await setup.reconcile(gone, false, () => false);
    assert.equal(svc.configured.length, 2, 'a follow ended meanwhile: not configured');
  });
});
