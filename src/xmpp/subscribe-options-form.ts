// pubsub#subscribe_options <-> SubscriptionOptions (XEP-0060 §6.3): the form a subscriber gets
// and the parsing of what it submits. Bad values and options this service cannot honour are
// bad-request + invalid-options naming the field.

import type { Element } from 'ltx';
import { fail } from '../pubsub/errors.ts';
import { DEFAULT_DIGEST_FREQUENCY_MS, MAX_DIGEST_FREQUENCY_MS, MIN_DIGEST_FREQUENCY_MS } from '../pubsub/subscription-options.ts';
import type { SubscriptionOptions } from '../pubsub/types.ts';
import { buildForm, parseForm } from './forms.ts';
import { NS } from './ns.ts';

/**
 * Hermod's subscription option (src/pubsub/one-copy.ts), named in Clark notation as XEP-0068
 * §3.4 asks of a field added to a FORM_TYPE another party manages.
 */
export const ONE_COPY_FIELD = `{${NS.HERMOD_PUBSUB}}one_copy`;
/** Hermod's subscription option for packed payloads in notifications (src/xmpp/packed.ts). */
export const PACKED_FIELD = `{${NS.HERMOD_PUBSUB}}packed`;

/** Registered fields Hermod does not implement but accepts when they ask for nothing. */
const ACCEPTED_WHEN_OFF = new Set(['pubsub#include_body']);

export function subscribeOptionsForm(options: SubscriptionOptions, type: 'form' | 'result' = 'form'): Element {
  return buildForm(type, NS.PUBSUB_SUBSCRIBE_OPTIONS, [
    { var: 'pubsub#deliver', type: 'boolean', label: 'Enable delivery?', values: [options.deliver ? '1' : '0'] },
    { var: 'pubsub#expire', type: 'text-single', label: 'When the subscription ends (XEP-0082 DateTime; empty: never)', values: options.expire === undefined ? [] : [new Date(options.expire).toISOString()] },
    { var: 'pubsub#subscription_type', type: 'list-single', label: 'Receive notification of items', values: [options.subscriptionType], options: [{ value: 'items' }] },
    { var: 'pubsub#digest', type: 'boolean', label: 'Receive digests (aggregations) of notifications?', values: [options.digest ? '1' : '0'] },
    {
      var: 'pubsub#digest_frequency',
      type: 'text-single',
      label: `Minimum number of milliseconds between sending any two notification digests (${MIN_DIGEST_FREQUENCY_MS} to ${MAX_DIGEST_FREQUENCY_MS})`,
      values: [String(options.digestFrequency ?? DEFAULT_DIGEST_FREQUENCY_MS)],
    },
    {
      var: ONE_COPY_FIELD,
      type: 'boolean',
      label: 'Receive an item published to several of your nodes with its payload once (the others without payload)?',
      values: [options.oneCopy ? '1' : '0'],
    },
    {
      var: PACKED_FIELD,
      type: 'boolean',
      label: 'Receive item payloads in notifications as base64 text, the <item/>\'s only content (one text node for the servers to carry)?',
      values: [options.packed ? '1' : '0'],
    },
  ]);
}

function bool(name: string, value: string | undefined): boolean {
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  return fail('invalid-options', `${name} must be a boolean (got '${value ?? ''}')`);
}

/** XEP-0082 DateTime (with a zone) -> ms since epoch. */
function dateTime(name: string, value: string): number {
  const match = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value);
  const ms = Date.parse(value);
  if (!match || Number.isNaN(ms)) fail('invalid-options', `${name} must be an XEP-0082 DateTime such as 2030-01-01T00:00:00Z (got '${value}')`);
  return ms;
}

/** A whole number of milliseconds in the digest bounds. */
function digestFrequency(name: string, value: string | undefined): number {
  const ms = value !== undefined && /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!(ms >= MIN_DIGEST_FREQUENCY_MS && ms <= MAX_DIGEST_FREQUENCY_MS)) {
    fail('invalid-options', `${name} must be a whole number of milliseconds from ${MIN_DIGEST_FREQUENCY_MS} to ${MAX_DIGEST_FREQUENCY_MS} (1 min) (got '${value ?? ''}')`);
  }
  return ms;
}

/**
 * A submitted pubsub#subscribe_options form -> the options it changes (XEP-0060 §6.3.5).
 * Errors: invalid-options naming the field (§6.3.7) for a bad value or a field this service
 * does not support; pubsub#digest_frequency outside [10 ms, 1 min].
 */
export function parseSubscribeOptionsForm(x: Element): Partial<SubscriptionOptions> {
  const form = parseForm(x);
  if (form.type === 'cancel') return {};
  if (form.type !== 'submit') fail('invalid-options', `subscription options must be a data form of type submit (got '${form.type}')`);
  if (form.formType !== undefined && form.formType !== NS.PUBSUB_SUBSCRIBE_OPTIONS) fail('invalid-options', `FORM_TYPE must be ${NS.PUBSUB_SUBSCRIBE_OPTIONS}`);
  const change: Partial<SubscriptionOptions> = {};
  for (const [name, values] of form.fields) {
    const value = values[0];
    if (name === 'pubsub#deliver') change.deliver = bool(name, value);
    else if (name === 'pubsub#expire') {
      if (value === undefined || value === '') change.expire = undefined;
      else change.expire = dateTime(name, value);
    } else if (name === 'pubsub#subscription_type') {
      if (value !== 'items') fail('invalid-options', `pubsub#subscription_type must be items (got '${value ?? ''}')`);
      change.subscriptionType = 'items';
    } else if (name === 'pubsub#digest') change.digest = bool(name, value);
    else if (name === 'pubsub#digest_frequency') change.digestFrequency = digestFrequency(name, value);
    else if (name === ONE_COPY_FIELD) change.oneCopy = bool(name, value);
    else if (name === PACKED_FIELD) change.packed = bool(name, value);
    else if (ACCEPTED_WHEN_OFF.has(name)) {
      if (bool(name, value)) fail('invalid-options', `${name} is not supported by this service`);
    } else fail('invalid-options', `subscription option ${name} is not supported by this service`);
  }
  return change;
}
