// Who may act on a node and who hears of it: affiliations (service admins count as owners), the
// capability table asked with the owners' rosters where the access model needs them (presence
// and roster models, XEP-0060 §4.5, read through XEP-0356 privileges: RosterSource), and the
// recipients of a notification — approved, delivering subscriptions whose JID may still be
// notified, only available ones on a pubsub#presence_based_delivery node (§12).

import { bareJid } from '../util/bare-jid.ts';
import { needsRoster, rosterGrants, rosterModelRefusal, type PresenceView, type Roster, type RosterSource } from './access.ts';
import { may, type Action } from './capabilities.ts';
import { fail } from './errors.ts';
import type { NodeState } from './node-state.ts';
import { digestMsOf } from './subscription-options.ts';
import { ACCESS_MODELS, type AccessModel, type Affiliation, type Recipient } from './types.ts';

export interface AudienceOptions {
  /** Bare JIDs with owner rights on every node. */
  admins: ReadonlySet<string>;
  /** Owners' rosters (absent: the presence and roster models are refused). */
  rosters?: RosterSource;
  /** Who is available (absent: nobody is known to be). */
  presence?: PresenceView;
  /** A roster that could not be read (access is refused meanwhile). */
  onError: (err: unknown) => void;
}

export class Audience {
  constructor(private readonly options: AudienceOptions) {}

  /** Is this bare JID a service admin? */
  isAdmin(bare: string): boolean {
    return this.options.admins.has(bare);
  }

  /** The access models offered now: presence and roster only while a server grants roster access. */
  accessModels(): AccessModel[] {
    return ACCESS_MODELS.filter((m) => !needsRoster(m) || this.options.rosters?.granted() === true);
  }

  /** Why `model` cannot be set on a node with these owners now (rosterModelRefusal), or undefined. */
  modelRefusal(model: AccessModel, owners: readonly string[]): string | undefined {
    return rosterModelRefusal(model, this.options.rosters, owners);
  }

  /** The affiliation of `jid`'s bare JID with the node ('owner' for admins). */
  affiliationOf(state: NodeState, jid: string): Affiliation {
    const bare = bareJid(jid);
    if (this.options.admins.has(bare)) return 'owner';
    return state.affiliations.get(bare) ?? 'none';
  }

  /** Does any resource of this JID's bare JID hold an approved subscription? */
  isSubscribed(state: NodeState, jid: string): boolean {
    const bare = bareJid(jid);
    return state.subscriptions.some((s) => s.state === 'subscribed' && bareJid(s.jid) === bare);
  }

  /** The owners of a node (bare JIDs), e.g. to send them approval requests. */
  owners(state: NodeState): string[] {
    const out: string[] = [];
    for (const [jid, affiliation] of state.affiliations) if (affiliation === 'owner') out.push(jid);
    return out;
  }

  /**
   * May `jid` do `action` on the node? `subscribed` overrides the lookup of its subscription;
   * `rosters`: the owners' rosters, for the presence and roster models (rostersFor) — without
   * them an entity with no affiliation gets nothing on such a node.
   */
  can(state: NodeState, jid: string, action: Action, subscribed?: boolean, rosters?: readonly Roster[]): boolean {
    const affiliation = this.affiliationOf(state, jid);
    let { accessModel } = state.record.config;
    if (affiliation === 'none' && needsRoster(accessModel) && rosters && rosterGrants(state.record.config, rosters, jid)) accessModel = 'open';
    if (may(affiliation, accessModel, action, false)) return true;
    return may(affiliation, accessModel, action, subscribed ?? this.isSubscribed(state, jid));
  }

  /**
   * can(), or the error that says why not. For what the access model governs (subscribing,
   * retrieving items: §6.1.3, §6.5.9): `closed-node` (whitelist), `presence-subscription-required`
   * (presence model), `not-in-roster-group` (roster model), `must-subscribe` (authorize model,
   * approved subscribers only). Otherwise, and for the owner's and publishers' actions whatever
   * the model (§8.2.3.2, §8.4.3.1, §8.5.3.2 and the other owner use cases: no access model lets an entity
   * configure, delete or purge), `forbidden`.
   */
  require(state: NodeState, jid: string, action: Action, rosters?: readonly Roster[]): void {
    if (this.can(state, jid, action, undefined, rosters)) return;
    const affiliation = this.affiliationOf(state, jid);
    const { accessModel } = state.record.config;
    if (action !== 'subscribe' && action !== 'retrieve-items' && action !== 'be-notified') fail('forbidden');
    if (affiliation === 'none' && accessModel === 'whitelist') fail('closed-node');
    if (affiliation === 'none' && accessModel === 'presence') fail('presence-subscription-required');
    if (affiliation === 'none' && accessModel === 'roster') fail('not-in-roster-group');
    if (affiliation === 'none' && accessModel === 'authorize' && may(affiliation, accessModel, action, true)) {
      fail('must-subscribe', 'only approved subscribers may do this on this node');
    }
    fail('forbidden');
  }

  /** require() with the owners' rosters read when the access model needs them. */
  async requireWithRosters(state: NodeState, jid: string, action: Action): Promise<void> {
    this.require(state, jid, action, await this.rostersFor(state));
  }

  /**
   * May `actor` publish (§7.1.3.1, pubsub#publish_model)? Under `subscribers`, a subscriber
   * publishes only while the access model still lets it receive the node's items, as its
   * notifications do (recipients): on a presence or roster node, by the owners' `rosters` now —
   * one removed from the roster since, or while no roster can be read, gets nothing and
   * publishes nothing. Errors: `forbidden` (outcasts, and whoever the publish model leaves out).
   */
  requirePublish(state: NodeState, actor: string, rosters?: readonly Roster[]): void {
    const { publishModel, accessModel } = state.record.config;
    const affiliation = this.affiliationOf(state, actor);
    if (may(affiliation, accessModel, 'publish')) return;
    if (affiliation === 'outcast') fail('forbidden');
    if (publishModel === 'open') return;
    if (publishModel === 'subscribers' && this.isSubscribed(state, actor) && this.can(state, actor, 'be-notified', true, rosters)) return;
    fail('forbidden');
  }

  /** requirePublish() with the owners' rosters read where it needs them (a subscriber publishing on a presence or roster node). */
  async requirePublishWithRosters(state: NodeState, actor: string): Promise<void> {
    const { publishModel, accessModel } = state.record.config;
    const rostersNeeded = publishModel === 'subscribers' && needsRoster(accessModel) && !may(this.affiliationOf(state, actor), accessModel, 'publish') && this.isSubscribed(state, actor);
    this.requirePublish(state, actor, rostersNeeded ? await this.rostersFor(state) : undefined);
  }

  /**
   * Subscribers that may receive notifications right now (access re-checked per send; paused
   * subscriptions skipped). A JID with several subscriptions gets one notification naming them.
   * Digest subscriptions (pubsub#digest) carry their interval (`digestMs`): the notification
   * queue aggregates their item notifications; presence and access are checked here, per item.
   * `oneCopy` is set where every subscription of the JID asked for one copy (one-copy.ts),
   * `packed` where every one asked for packed payloads (src/xmpp/packed.ts).
   */
  recipients(state: NodeState, rosters?: readonly Roster[]): Recipient[] {
    const out: Recipient[] = [];
    let byJid: Map<string, Recipient> | undefined;
    let multi: Set<string> | undefined;
    const presenceBased = state.record.config.presenceBasedDelivery;
    for (const sub of state.subscriptions) {
      if (sub.state !== 'subscribed' || sub.options?.deliver === false || !this.can(state, sub.jid, 'be-notified', true, rosters)) continue;
      if (presenceBased && !this.options.presence?.isAvailable(sub.jid)) continue; // §12: available subscribers only
      const digestMs = digestMsOf(sub.options);
      const seen = byJid?.get(sub.jid);
      if (seen) {
        (seen.subids ??= [seen.subid]).push(sub.subid);
        // One message for all of them: aggregated only if every one asked for digests (the shortest interval).
        if (seen.digestMs !== undefined) {
          if (digestMs === undefined) delete seen.digestMs;
          else seen.digestMs = Math.min(seen.digestMs, digestMs);
        }
        // Without its payload only if every one of them asked for one copy.
        if (sub.options?.oneCopy !== true) delete seen.oneCopy;
        // Packed only if every one of them asked for it (one message for all).
        if (sub.options?.packed !== true) delete seen.packed;
        continue;
      }
      const recipient: Recipient = { jid: sub.jid, subid: sub.subid, ...(digestMs !== undefined ? { digestMs } : {}), ...(sub.options?.oneCopy === true ? { oneCopy: true as const } : {}), ...(sub.options?.packed === true ? { packed: true as const } : {}) };
      out.push(recipient);
      (byJid ??= new Map()).set(sub.jid, recipient);
    }
    // A JID holding several subscriptions is told which ones, even if only one delivers.
    for (const sub of state.subscriptions) {
      if (sub.subid !== byJid?.get(sub.jid)?.subid) (multi ??= new Set()).add(sub.jid);
    }
    if (multi) for (const r of out) if (multi.has(r.jid)) r.subids ??= [r.subid];
    return out;
  }

  /** Whether `jid` is known to be available (pubsub#presence_based_delivery; nobody is without a presence view). */
  available(jid: string): boolean {
    return this.options.presence?.isAvailable(jid) ?? false;
  }

  /** recipients() with the owners' rosters when the access model needs them. */
  async of(state: NodeState): Promise<Recipient[]> {
    return this.recipients(state, await this.rostersFor(state));
  }

  /**
   * The rosters of the node's owners, for the presence and roster access models (undefined for
   * other models). An owner whose roster cannot be read (no privilege covers it, or the server
   * does not answer) contributes nothing: access is refused rather than guessed. `unread`, when
   * given, gets the owners whose roster a privilege covers but could not be read now.
   */
  async rostersFor(state: NodeState, unread?: string[]): Promise<Roster[] | undefined> {
    if (!needsRoster(state.record.config.accessModel)) return undefined;
    const source = this.options.rosters;
    if (!source) return [];
    const read = await Promise.all(
      this.owners(state)
        .filter((owner) => source.covers(owner))
        .map((owner) =>
          source.roster(owner).catch((err: unknown) => {
            this.options.onError(new Error(`the roster of ${owner} could not be read (access refused meanwhile): ${String(err)}`));
            unread?.push(owner);
            return undefined;
          }),
        ),
    );
    return read.filter((r): r is Roster => r !== undefined);
  }
}
