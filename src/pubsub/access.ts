// The presence and roster access models (XEP-0060 §4.5): whether an entity without an
// affiliation may subscribe and retrieve items depends on the node owners' rosters. The core
// asks an injected RosterSource (in Hermod: XEP-0356 privileges, src/xmpp/privilege.ts) and
// decides here; it never sees XMPP.

import { bareJid } from '../util/bare-jid.ts';
import type { AccessModel, NodeConfig } from './types.ts';

/** One contact in an owner's roster. */
export interface RosterItem {
  /** RFC 6121 subscription state, from the owner's point of view. */
  subscription: 'none' | 'to' | 'from' | 'both' | 'remove';
  groups: string[];
}

/** An owner's roster: contact bare JID -> item. */
export type Roster = ReadonlyMap<string, RosterItem>;

/** Where owners' rosters come from. */
export interface RosterSource {
  /** Has any server granted roster access at all? */
  granted(): boolean;
  /** Can this owner's roster be read (a privilege covers the owner's server)? */
  covers(owner: string): boolean;
  /** The owner's roster; rejects when it cannot be read now. */
  roster(owner: string): Promise<Roster>;
}

export const ROSTER_MODELS: ReadonlySet<AccessModel> = new Set(['presence', 'roster']);

export const needsRoster = (model: AccessModel): boolean => ROSTER_MODELS.has(model);

/**
 * Does one of these owners' rosters grant `jid` access? presence: the owner has a presence
 * subscription from the entity's point of view (the contact sees the owner's presence:
 * subscription `from` or `both`); roster: the contact is in one of `roster_groups_allowed`.
 */
export function rosterGrants(config: Pick<NodeConfig, 'accessModel' | 'rosterGroupsAllowed'>, rosters: readonly Roster[], jid: string): boolean {
  const bare = bareJid(jid);
  for (const roster of rosters) {
    const item = roster.get(bare);
    if (!item) continue;
    if (config.accessModel === 'presence' && (item.subscription === 'from' || item.subscription === 'both')) return true;
    if (config.accessModel === 'roster' && item.groups.some((g) => config.rosterGroupsAllowed.includes(g))) return true;
  }
  return false;
}

/** Why a presence/roster model cannot be configured for these owners, or undefined if it can. */
export function rosterModelRefusal(model: AccessModel, source: RosterSource | undefined, owners: readonly string[]): string | undefined {
  if (!needsRoster(model)) return undefined;
  if (!source || !source.granted()) return `pubsub#access_model '${model}' needs the owners' rosters, and this service has no XEP-0356 roster privilege from its server`;
  const uncovered = owners.filter((o) => !source.covers(o));
  if (uncovered.length > 0) {
    return `pubsub#access_model '${model}' needs the owners' rosters, and no XEP-0356 roster privilege covers ${uncovered.join(', ')} (only users of the server this service is attached to, when it grants roster access)`;
  }
  return undefined;
}

/** Who is available, as far as the service knows (presence it receives); for presence-based delivery. */
export interface PresenceView {
  /** A bare JID: any of its resources is available; a full JID: that resource is. */
  isAvailable(jid: string): boolean;
}
