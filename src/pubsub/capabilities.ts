// The capability table of XEP-0060 §4.1: for each affiliation, what it may do. Access rules are
// data here; the service asks `may(affiliation, action)` and nothing else decides permissions.
// The access model (open/whitelist) decides the *effective* affiliation of entities with no
// stored one (see effectiveAffiliation), so the table stays the single source of truth.

import type { AccessModel, Affiliation } from './types.ts';

export const ACTIONS = [
  'subscribe',
  'retrieve-items',
  'be-notified', // receive notifications (re-checked at every send)
  'publish',
  'retract-own',
  'retract-any',
  'purge',
  'configure',
  'delete',
  'manage-affiliations',
  'manage-subscriptions',
] as const;
export type Action = (typeof ACTIONS)[number];

type Table = Record<Affiliation, ReadonlySet<Action>>;

const set = (...actions: Action[]): ReadonlySet<Action> => new Set(actions);

export const CAPABILITIES: Table = {
  owner: new Set(ACTIONS),
  publisher: set('subscribe', 'retrieve-items', 'be-notified', 'publish', 'retract-own', 'retract-any'),
  'publish-only': set('publish', 'retract-own'),
  member: set('subscribe', 'retrieve-items', 'be-notified'),
  none: set('subscribe', 'retrieve-items', 'be-notified'),
  outcast: set(),
};

/**
 * What an entity counts as on a node. On a whitelist node an entity with no affiliation is
 * treated like an outcast for reading and subscribing (but keeps the `none` name on the wire).
 */
export function may(affiliation: Affiliation, accessModel: AccessModel, action: Action): boolean {
  if (affiliation === 'none' && accessModel === 'whitelist') return false;
  return CAPABILITIES[affiliation].has(action);
}
