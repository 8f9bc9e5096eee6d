// How our subscriptions to partners' nodes are configured (XEP-0060 §6.3 subscription options),
// apart from following them (partners.ts): after subscribing, one read of the service's options
// form and at most one configure asks for what the service offers of notification digests
// (pubsub#digest, pubsub#digest_frequency), Hermod's `{urn:hermod:pubsub:0}one_copy` and
// `{urn:hermod:pubsub:0}packed`, and turns delivery back on where a drain that did not finish left
// it paused; later, one copy and packed are set alone where a discovery finds them differing from
// what is wanted, and a drain pauses and resumes delivery. Options a service does not offer (an
// older Hermod, another server) are never asked for.

import type { Logger } from '../log.ts';
import { IqError } from '../xmpp/iq-error.ts';
import type { PubsubClient } from '../xmpp/pubsub-client.ts';
import { ONE_COPY_FIELD, PACKED_FIELD } from '../xmpp/subscribe-options-form.ts';

/** Our subscription to one partner node, as far as its options go (partners.ts's follow record is one). */
export interface ConfiguredSubscription {
  service: string;
  node: string;
  /** Our subscription's id, when the service gave one. */
  subid?: string;
  /** What the service took of one_copy for us; undefined where it does not offer the option (not asked again). */
  oneCopy?: boolean;
  /**
   * What the service has of packed for us, as far as we know; undefined where it does not offer
   * the option (not asked again). A discovery sets it again where it differs from the setting (a
   * configure refused, e.g. with another field of the same form).
   */
  packed?: boolean;
  /** The configuring after subscribing (setUp), while under way. */
  setUp?: Promise<void>;
}

export interface SubscriptionSetupOptions {
  client: Pick<PubsubClient, 'subscriptionOptions' | 'configureSubscription'>;
  log: Logger;
  /** pubsub#digest_frequency (ms) to ask for where pubsub#digest is offered; undefined or 0: one notification per item (digests turned off where on). */
  digestMs?: number;
  /** Ask for packed payloads where offered (default true); false turns them off where on. */
  packed?: boolean;
  /** Whether one copy is wanted for a node of a service now (no stylesheet of its own, …). */
  oneCopy: (service: string, node: string) => boolean;
}

const isOn = (values: string[] | undefined): boolean => ['1', 'true'].includes(values?.[0] ?? '');

export class SubscriptionSetup {
  constructor(private readonly o: SubscriptionSetupOptions) {}

  /** Whether packed payloads are wanted (the setting). */
  get wantsPacked(): boolean {
    return this.o.packed !== false;
  }

  /**
   * Configures our subscription `s` after subscribing, from the service's options form: digests
   * (on with `digestMs`, else off where on), one copy as `oneCopy` says, packed as the setting
   * says, and delivery back on where it was left paused. Records in `s` what the service took of
   * one copy and packed. Rejects when delivery is paused and could not be resumed, or when the
   * options got no answer (IqError.undecided: delivery may be paused) — the
   * follow then fails and is tried again: a catch-up with delivery paused would miss what is
   * published after it; anything else is logged (options not offered are skipped).
   */
  async setUp(s: ConfiguredSubscription): Promise<void> {
    const { service, node, subid } = s;
    const ms = this.o.digestMs;
    let oneCopy: boolean | undefined;
    /** What the service has of one_copy and packed before we change them (undefined: not offered, or not read). */
    let hadOneCopy: boolean | undefined;
    let hadPacked: boolean | undefined;
    let packed: boolean | undefined;
    let read = false;
    let paused = false;
    try {
      const options = await this.o.client.subscriptionOptions(service, node, subid);
      read = true;
      const change: Record<string, string> = {};
      const deliver = options.get('pubsub#deliver')?.[0];
      paused = deliver === '0' || deliver === 'false';
      if (paused) change['pubsub#deliver'] = '1';
      if (ms && options.has('pubsub#digest')) {
        // Asked (with the frequency stated, not left to the service's default) unless the
        // subscription has them already at this frequency (a restart) — also where that is the
        // frequency the form shows as the service's default (digests turned on by someone else
        // without one): what is delivered is then what we ask for.
        if (!isOn(options.get('pubsub#digest')) || (options.has('pubsub#digest_frequency') && options.get('pubsub#digest_frequency')?.[0] !== String(ms))) {
          change['pubsub#digest'] = '1';
          if (options.has('pubsub#digest_frequency')) change['pubsub#digest_frequency'] = String(ms);
        }
      } else if (ms) this.o.log.debug('partner service offers no notification digests; one notification per item', { service, node });
      // 0: one notification per item, also where an earlier run (or the other replication on this JID) asked for digests.
      else if (isOn(options.get('pubsub#digest'))) change['pubsub#digest'] = '0';
      // Payloads as one base64 text node each: far less for the servers carrying them to parse
      // (unless turned off: then off again where an earlier run turned it on).
      if (options.has(PACKED_FIELD)) {
        packed = this.wantsPacked;
        hadPacked = isOn(options.get(PACKED_FIELD));
        if (packed !== hadPacked) change[PACKED_FIELD] = packed ? '1' : '0';
      }
      if (options.has(ONE_COPY_FIELD)) {
        // On or off as the node's handling is now (a stylesheet added since turns it off).
        oneCopy = this.o.oneCopy(service, node);
        hadOneCopy = isOn(options.get(ONE_COPY_FIELD));
        if (oneCopy !== hadOneCopy) change[ONE_COPY_FIELD] = oneCopy ? '1' : '0';
      }
      if (Object.keys(change).length > 0) {
        await this.o.client.configureSubscription(service, node, change, subid);
        this.o.log.debug('subscription configured', { service, node, ...change });
      }
      // Only what the service took: otherwise notifications without payload are fetched at once.
      if (oneCopy !== undefined) s.oneCopy = oneCopy;
      if (packed !== undefined) s.packed = packed;
      if (packed === false && hadPacked === true) this.o.log.info("packed payloads turned off at a partner's node (packedPayloads is false)", { service, node });
    } catch (err) {
      // Delivery left paused would lose what is published after the catch-up: the follow fails (and is tried again).
      if (paused) throw new Error(`resuming the paused delivery failed: ${String(err)}`);
      // Options not read for want of an answer (a timeout, a "not now": IqError.undecided): delivery
      // may be paused (a drain an earlier run or follow left unfinished), and only this read turns
      // it back on — the follow fails and is tried again. A service that answers that it has no
      // options (feature-not-implemented), or a form that cannot be read, sends one notification
      // per item.
      if (!read && err instanceof IqError && err.undecided) throw new Error(`reading our subscription options got no answer: ${String(err)}`);
      // As the service still has them: a discovery asks again where they differ from what we want.
      if (hadOneCopy !== undefined) s.oneCopy = hadOneCopy;
      if (hadPacked !== undefined) s.packed = hadPacked;
      if (read) this.o.log.warn('configuring our subscription failed; notification digests, one copy and packed payloads as the service had them (one copy and packed asked again at the next discovery)', { service, node, reason: String(err) });
      else this.o.log.debug('subscription options not available; one notification per item', { service, node, reason: String(err) });
    }
  }

  /**
   * Where a discovery finds `s` differing from what is wanted now (`oneCopy`: the node's handling
   * changed, a stylesheet added or removed; packed: a configure that did not take), sets each
   * alone — packed only while `current()` (the follow not ended meanwhile). Options the service
   * does not offer are left alone. Errors: none (logged).
   */
  async reconcile(s: ConfiguredSubscription, oneCopy: boolean, current: () => boolean = () => true): Promise<void> {
    if (s.oneCopy !== undefined && s.oneCopy !== oneCopy) await this.setOneCopy(s, oneCopy);
    if (current() && s.packed !== undefined && s.packed !== this.wantsPacked) await this.setPacked(s, this.wantsPacked);
  }

  /**
   * Turns one_copy on or off for our subscription. Until the service took it, a notification
   * without payload there is fetched (partners.ts checks `oneCopy` as it is now). Errors: none (logged).
   */
  private async setOneCopy(s: ConfiguredSubscription, on: boolean): Promise<void> {
    try {
      await this.o.client.configureSubscription(s.service, s.node, { [ONE_COPY_FIELD]: on ? '1' : '0' }, s.subid);
      s.oneCopy = on;
      this.o.log.debug('subscription configured', { service: s.service, node: s.node, [ONE_COPY_FIELD]: on });
    } catch (err) {
      this.o.log.warn('changing one copy of shared items failed', { service: s.service, node: s.node, on, reason: String(err) });
    }
  }

  /** Turns packed on or off for our subscription (each one turned off is logged at info). Errors: none (logged). */
  private async setPacked(s: ConfiguredSubscription, on: boolean): Promise<void> {
    try {
      await this.o.client.configureSubscription(s.service, s.node, { [PACKED_FIELD]: on ? '1' : '0' }, s.subid);
      s.packed = on;
      if (on) this.o.log.debug('subscription configured', { service: s.service, node: s.node, [PACKED_FIELD]: on });
      else this.o.log.info("packed payloads turned off at a partner's node (packedPayloads is false)", { service: s.service, node: s.node, [PACKED_FIELD]: on });
    } catch (err) {
      this.o.log.warn('changing packed payloads failed', { service: s.service, node: s.node, on, reason: String(err) });
    }
  }

  /**
   * Pauses (false) or resumes (true) the delivery of the node's notifications to us
   * (pubsub#deliver, XEP-0060 §6.3), after the configuring under way, if any. Resolves to
   * `taken`, `refused` (an error answer that decides: a service without the option; nothing
   * changed) or `unknown` (no answer, or one of type wait — IqError.undecided: it may have been
   * applied, or may be on a later try). Logged when not taken.
   */
  async setDelivery(s: ConfiguredSubscription, deliver: boolean): Promise<'taken' | 'refused' | 'unknown'> {
    try {
      await s.setUp?.catch(() => undefined);
      await this.o.client.configureSubscription(s.service, s.node, { 'pubsub#deliver': deliver ? '1' : '0' }, s.subid);
      return 'taken';
    } catch (err) {
      this.o.log[deliver ? 'warn' : 'debug'](`${deliver ? 'resuming' : 'pausing'} notification delivery failed`, { service: s.service, node: s.node, reason: String(err) });
      return err instanceof IqError && !err.undecided ? 'refused' : 'unknown';
    }
  }
}
