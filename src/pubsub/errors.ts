// Errors of the pub/sub core: a short name per failure, as in Prosody's util/pubsub. The XMPP
// layer maps each name to a stanza error in one table (src/xmpp/errors.ts); the core never
// builds wire errors itself.

export const PUBSUB_ERROR_NAMES = [
  'item-not-found', // node (or item) does not exist
  'forbidden', // the actor's affiliation does not allow the action
  'closed-node', // whitelist node, actor is not on the list
  'conflict', // node already exists
  'nodeid-required',
  'item-required',
  'payload-required',
  'item-forbidden',
  'invalid-payload',
  'invalid-jid', // subscribe: JID does not match the sender
  'not-subscribed', // unsubscribe without a subscription
  'must-subscribe', // authorize node: only (approved) subscribers retrieve items
  'pending-subscription', // authorize node: the request already waits for an owner
  'presence-subscription-required', // presence node: the owner's roster does not share presence with the entity
  'not-in-roster-group', // roster node: the entity is in none of the allowed groups of an owner's roster
  'subid-required',
  'invalid-subid',
  'invalid-options', // subscription options that cannot be applied
  'not-acceptable', // invalid configuration or value; `text` says which
  'persistent-items-unsupported',
  'payload-too-big',
  'node-full', // publish_node_full=reject and the node holds max_items (§7.1.3.4)
  'subscriptions-unsupported', // pubsub#subscribe=0: the node takes no subscription requests (§6.1.3.11)
  'precondition-not-met', // publish-options: the node is not configured as required
  'bad-request',
  'internal-server-error',
  'max-nodes-exceeded', // the owner holds the most nodes the service allows (limits.ts)
  'rate-limited', // the sender publishes faster than the service allows (limits.ts)
  'too-many-subscriptions', // the bare JID holds the most subscriptions to the node, or the node the most pending ones (§6.1.3.13)
] as const;
export type PubsubErrorName = (typeof PUBSUB_ERROR_NAMES)[number];

export class PubsubError extends Error {
  constructor(
    readonly condition: PubsubErrorName,
    readonly text?: string,
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'PubsubError';
  }
}

export function fail(condition: PubsubErrorName, text?: string): never {
  throw new PubsubError(condition, text);
}
