// The capability table of XEP-0060 §4.1: for each affiliation, what it may do. Access rules are
// data here; the service asks `may(affiliation, action)` and nothing else decides permissions.
// The access model decides what entities with no stored affiliation may do (ACCESS_MODEL_RULES),
// so these two tables stay the single source of truth.

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
 * What the access model lets an entity without an affiliation do, instead of the table's `none`
 * row: `approved` is what it may do once its subscription is approved (authorize). `approval`:
 * its subscription requests wait for an owner.
 */
export const ACCESS_MODEL_RULES: Record<AccessModel, { none: ReadonlySet<Action>; approved: ReadonlySet<Action>; approval: boolean }> = {
  open: { none: CAPABILITIES.none, approved: CAPABILITIES.none, approval: false },
  authorize: { none: set('subscribe'), approved: CAPABILITIES.none, approval: true },
  whitelist: { none: set(), approved: set(), approval: false },
  // Without the roster relation (src/pubsub/access.ts) nothing; with it, the open model's rights.
  presence: { none: set(), approved: set(), approval: false },
  roster: { none: set(), approved: set(), approval: false },
};

/**
 * May an entity with this affiliation do this on a node with this access model? `subscribed`:
 * it holds an approved subscription to the node.
 */
export function may(affiliation: Affiliation, accessModel: AccessModel, action: Action, subscribed = false): boolean {
  if (affiliation === 'none') {
    const rules = ACCESS_MODEL_RULES[accessModel];
    return (subscribed ? rules.approved : rules.none).has(action);
  }
  return CAPABILITIES[affiliation].has(action);
}

/** Does a subscription request of this entity need an owner's approval? */
export function needsApproval(affiliation: Affiliation, accessModel: AccessModel): boolean {
  return affiliation === 'none' && ACCESS_MODEL_RULES[accessModel].approval;
}
