// Stanza errors: the one table that maps pub/sub core error names to RFC 6120 conditions and
// XEP-0060 pubsub#errors application conditions, and the builder of <error/> elements.

import { Element } from 'ltx';
import { PubsubError, type PubsubErrorName } from '../pubsub/errors.ts';
import { NS } from './ns.ts';

export type ErrorType = 'cancel' | 'modify' | 'auth' | 'wait' | 'continue';

export interface ErrorSpec {
  type: ErrorType;
  condition: string;
  /** pubsub#errors application condition. */
  pubsub?: string;
  /** For pubsub#errors <unsupported feature='…'/>. */
  feature?: string;
  /** XEP-0050 application condition (bad-action, bad-sessionid, malformed-action, session-expired, …). */
  commands?: string;
}

/** Thrown by wire handlers; caught by the router and sent as an error reply. */
export class StanzaError extends Error {
  constructor(
    readonly spec: ErrorSpec,
    readonly text?: string,
  ) {
    super(text ? `${spec.condition}: ${text}` : spec.condition);
    this.name = 'StanzaError';
  }
}

export const ERROR_TABLE: Record<PubsubErrorName, ErrorSpec> = {
  'item-not-found': { type: 'cancel', condition: 'item-not-found' },
  forbidden: { type: 'auth', condition: 'forbidden' },
  'closed-node': { type: 'cancel', condition: 'not-allowed', pubsub: 'closed-node' },
  conflict: { type: 'cancel', condition: 'conflict' },
  'nodeid-required': { type: 'modify', condition: 'bad-request', pubsub: 'nodeid-required' },
  'item-required': { type: 'modify', condition: 'bad-request', pubsub: 'item-required' },
  'payload-required': { type: 'modify', condition: 'bad-request', pubsub: 'payload-required' },
  'item-forbidden': { type: 'modify', condition: 'bad-request', pubsub: 'item-forbidden' },
  'invalid-payload': { type: 'modify', condition: 'bad-request', pubsub: 'invalid-payload' },
  'invalid-jid': { type: 'modify', condition: 'bad-request', pubsub: 'invalid-jid' },
  'not-subscribed': { type: 'cancel', condition: 'unexpected-request', pubsub: 'not-subscribed' },
  'must-subscribe': { type: 'auth', condition: 'not-authorized', pubsub: 'not-subscribed' },
  'pending-subscription': { type: 'auth', condition: 'not-authorized', pubsub: 'pending-subscription' },
  'presence-subscription-required': { type: 'auth', condition: 'not-authorized', pubsub: 'presence-subscription-required' },
  'not-in-roster-group': { type: 'auth', condition: 'not-authorized', pubsub: 'not-in-roster-group' },
  'subid-required': { type: 'modify', condition: 'bad-request', pubsub: 'subid-required' },
  'invalid-subid': { type: 'modify', condition: 'not-acceptable', pubsub: 'invalid-subid' },
  'invalid-options': { type: 'modify', condition: 'bad-request', pubsub: 'invalid-options' },
  'not-acceptable': { type: 'modify', condition: 'not-acceptable' },
  'persistent-items-unsupported': { type: 'cancel', condition: 'feature-not-implemented', pubsub: 'unsupported', feature: 'persistent-items' },
  'payload-too-big': { type: 'modify', condition: 'not-acceptable', pubsub: 'payload-too-big' },
  'node-full': { type: 'cancel', condition: 'conflict', pubsub: 'node-full' },
  'subscriptions-unsupported': { type: 'cancel', condition: 'feature-not-implemented', pubsub: 'unsupported', feature: 'subscribe' },
  'precondition-not-met': { type: 'cancel', condition: 'conflict', pubsub: 'precondition-not-met' },
  'bad-request': { type: 'modify', condition: 'bad-request' },
  'internal-server-error': { type: 'wait', condition: 'internal-server-error' },
  // Limits are the service's policy, not a shortage of resources (RFC 6120 §8.3.3.12 vs .18):
  // a node quota cannot be waited out (cancel; XEP-0060's pubsub#errors names it), a rate can (wait).
  'max-nodes-exceeded': { type: 'cancel', condition: 'policy-violation', pubsub: 'max-nodes-exceeded' },
  'rate-limited': { type: 'wait', condition: 'policy-violation' },
  'too-many-subscriptions': { type: 'wait', condition: 'policy-violation', pubsub: 'too-many-subscriptions' },
};

export const badRequest = (text: string, pubsub?: string): StanzaError =>
  new StanzaError({ type: 'modify', condition: 'bad-request', ...(pubsub ? { pubsub } : {}) }, text);

export const unsupported = (feature: string, text?: string): StanzaError =>
  new StanzaError({ type: 'cancel', condition: 'feature-not-implemented', pubsub: 'unsupported', feature }, text);

export const SERVICE_UNAVAILABLE: ErrorSpec = { type: 'cancel', condition: 'service-unavailable' };
export const INTERNAL: ErrorSpec = ERROR_TABLE['internal-server-error'];

/** The ErrorSpec and text for anything a handler threw; undefined for an unexpected failure. */
export function describeError(err: unknown): { spec: ErrorSpec; text?: string } | undefined {
  if (err instanceof StanzaError) return { spec: err.spec, ...(err.text ? { text: err.text } : {}) };
  if (err instanceof PubsubError) return { spec: ERROR_TABLE[err.condition], ...(err.text ? { text: err.text } : {}) };
  return undefined;
}

export function errorElement(spec: ErrorSpec, text?: string): Element {
  const error = new Element('error', { type: spec.type });
  error.c(spec.condition, { xmlns: NS.STANZAS });
  if (text) error.c('text', { xmlns: NS.STANZAS }).t(text);
  if (spec.pubsub) {
    error.c(spec.pubsub, { xmlns: NS.PUBSUB_ERRORS, ...(spec.feature ? { feature: spec.feature } : {}) });
  }
  if (spec.commands) error.c(spec.commands, { xmlns: NS.COMMANDS });
  return error;
}
