// XEP-0356 (Privileged Entity): what the attached server grants the component, and owners'
// rosters read with that privilege. After the component connects, the server sends a
// <message><privilege/></message> (ejabberd 23.01 speaks urn:xmpp:privilege:1, Prosody's
// mod_privilege urn:xmpp:privilege:2; both are read) naming the permissions: `roster`
// (none/get/set/both) and `presence` (none/managed_entity/roster). Only the server's own
// domains may grant (a privilege message from anywhere else is ignored and logged).
//
// Rosters are read with <iq type='get'><query xmlns='jabber:iq:roster'/></iq> addressed to the
// owner's bare JID. Neither server forwards roster pushes to a privileged component (Prosody's
// mod_privilege says so; ejabberd 23.01 has no such hook), so results are cached for a short
// time (ROSTER_TTL_MS) and read again after it: a roster change takes effect within that time.
// A roster that cannot be read refuses access (the core treats the owner as having no contacts).

import { Element } from 'ltx';
import { LRUCache } from 'lru-cache';
import type { IqCaller } from '../component/iq-caller.ts';
import type { Roster, RosterItem, RosterSource } from '../pubsub/access.ts';
import { normalizeJid, parseJid } from './jid.ts';

export const PRIVILEGE_NAMESPACES = ['urn:xmpp:privilege:1', 'urn:xmpp:privilege:2'] as const;
export const ROSTER_NS = 'jabber:iq:roster';
/** How long an owner's roster is trusted after it was read. */
export const ROSTER_TTL_MS = 10_000;
/** How long to wait for the server's roster answer. */
export const ROSTER_TIMEOUT_MS = 5_000;
/** Disco features (XEP-0060 names) that exist only while roster access is granted. */
export const PRIVILEGED_FEATURES = ['access-presence', 'access-roster'] as const;

export type RosterPermission = 'none' | 'get' | 'set' | 'both';
export type PresencePermission = 'none' | 'managed_entity' | 'roster';

export interface Grant {
  /** The namespace the server spoke. */
  namespace: string;
  roster: RosterPermission;
  presence: PresencePermission;
}

interface PrivilegeLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
}

export interface PrivilegesOptions {
  /** Domains of the attached server: only these may grant privileges (and have their users' rosters read). */
  serverDomains: Iterable<string>;
  iq: Pick<IqCaller, 'request'>;
  log: PrivilegeLog;
  ttlMs?: number;
  timeoutMs?: number;
}

const ROSTER_PERMISSIONS: readonly string[] = ['none', 'get', 'set', 'both'];
const PRESENCE_PERMISSIONS: readonly string[] = ['none', 'managed_entity', 'roster'];
const SUBSCRIPTIONS: readonly string[] = ['none', 'to', 'from', 'both', 'remove'];

/** The <privilege/> element of a message, if it is a XEP-0356 advertisement. */
export function privilegeElement(stanza: Element): Element | undefined {
  if (stanza.name !== 'message') return undefined;
  for (const ns of PRIVILEGE_NAMESPACES) {
    const el = stanza.getChild('privilege', ns);
    if (el) return el;
  }
  return undefined;
}

/** Reads the permissions of a <privilege/> element (unknown values count as none). */
export function parseGrant(privilege: Element): Grant {
  const grant: Grant = { namespace: privilege.getNS() ?? '', roster: 'none', presence: 'none' };
  for (const perm of privilege.getChildren('perm')) {
    const type = String(perm.attrs.type ?? 'none');
    if (perm.attrs.access === 'roster' && ROSTER_PERMISSIONS.includes(type)) grant.roster = type as RosterPermission;
    if (perm.attrs.access === 'presence' && PRESENCE_PERMISSIONS.includes(type)) grant.presence = type as PresencePermission;
  }
  return grant;
}

/** A jabber:iq:roster result as a Roster (items with invalid JIDs are skipped). */
export function parseRoster(result: Element): Roster {
  const roster = new Map<string, RosterItem>();
  const query = result.getChild('query', ROSTER_NS);
  for (const item of query?.getChildren('item') ?? []) {
    const jid = normalizeJid(String(item.attrs.jid ?? ''));
    if (!jid) continue;
    const subscription = String(item.attrs.subscription ?? 'none');
    roster.set(jid, {
      subscription: (SUBSCRIPTIONS.includes(subscription) ? subscription : 'none') as RosterItem['subscription'],
      groups: item.getChildren('group').map((g) => g.getText()),
    });
  }
  return roster;
}

const readsRoster = (grant: Grant | undefined): boolean => grant?.roster === 'get' || grant?.roster === 'both';

export class Privileges implements RosterSource {
  private readonly domains: Set<string>;
  private readonly grants = new Map<string, Grant>();
  /** Rosters read, made at the first read (a 10 000-entry LRUCache allocates its arrays at once: ~7 ms at every start otherwise). */
  private rosters: LRUCache<string, Roster> | undefined;
  private readonly loading = new Map<string, Promise<Roster>>();
  private readonly timeoutMs: number;

  constructor(private readonly options: PrivilegesOptions) {
    this.domains = new Set([...options.serverDomains].map((d) => d.toLowerCase()));
    this.timeoutMs = options.timeoutMs ?? ROSTER_TIMEOUT_MS;
  }

  /**
   * Takes a message if it is a privilege advertisement (returns true; it needs no reply) and
   * records what its sender grants.
   */
  handleMessage(stanza: Element): boolean {
    const privilege = privilegeElement(stanza);
    if (!privilege) return false;
    const from = String(stanza.attrs.from ?? '');
    const jid = parseJid(from);
    if (!jid || jid.local !== '' || jid.resource !== '' || !this.domains.has(jid.domain)) {
      this.options.log.warn('XEP-0356 privilege advertisement ignored: not from a domain of the attached server', { from, domains: [...this.domains] });
      return true;
    }
    const grant = parseGrant(privilege);
    this.grants.set(jid.domain, grant);
    this.rosters?.clear();
    this.options.log.info('XEP-0356 privileges granted', { from: jid.domain, namespace: grant.namespace, roster: grant.roster, presence: grant.presence });
    return true;
  }

  /** The connection ended: the server grants again when the component reconnects. */
  reset(): void {
    this.grants.clear();
    this.rosters?.clear();
  }

  /** What a domain granted, if anything. */
  grant(domain: string): Grant | undefined {
    return this.grants.get(domain.toLowerCase());
  }

  granted(): boolean {
    return [...this.grants.values()].some(readsRoster);
  }

  /** Does some domain forward presence (managed_entity or roster)? */
  presenceGranted(): boolean {
    return [...this.grants.values()].some((g) => g.presence !== 'none');
  }

  covers(owner: string): boolean {
    const jid = parseJid(owner);
    return !!jid && jid.local !== '' && readsRoster(this.grants.get(jid.domain));
  }

  /** Disco features that depend on the privileges (see PRIVILEGED_FEATURES). */
  features(): readonly string[] {
    return this.granted() ? PRIVILEGED_FEATURES : [];
  }

  roster(owner: string): Promise<Roster> {
    const bare = normalizeJid(owner);
    if (!bare || !this.covers(bare)) return Promise.reject(new Error(`no XEP-0356 roster privilege covers ${owner}`));
    this.rosters ??= new LRUCache({ max: 10_000, ttl: this.options.ttlMs ?? ROSTER_TTL_MS });
    const cached = this.rosters.get(bare);
    if (cached) return Promise.resolve(cached);
    let pending = this.loading.get(bare);
    if (!pending) {
      pending = this.options.iq
        .request(bare, 'get', new Element('query', { xmlns: ROSTER_NS }), this.timeoutMs)
        .then((result) => {
          const roster = parseRoster(result);
          this.rosters?.set(bare, roster);
          this.options.log.debug('roster read with XEP-0356 privilege', { owner: bare, contacts: roster.size });
          return roster;
        })
        .finally(() => this.loading.delete(bare));
      this.loading.set(bare, pending);
    }
    return pending;
  }
}
