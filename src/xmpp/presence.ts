// Presence at the component: answering presence subscriptions, and knowing which subscribers
// are available (pubsub#presence_based_delivery, send_last_published_item on_sub_and_presence).
//
// A component has no roster on the server, so Hermod keeps its own list of contacts (bare JIDs
// that subscribed to its presence) in the store's state space 'presence-contacts' (key: the bare
// JID; an older Hermod's dataDir/presence-contacts.json is imported once and renamed *.imported):
// - subscribe -> `subscribed`, and `subscribe` back (to receive the contact's presence);
// - unsubscribe -> `unsubscribed`; unsubscribed -> forgotten, its presence too;
// - probe -> the component's available presence;
// - on every connect: available presence to each contact and a probe (their servers answer with
//   the current presence of every resource).
// Presence forwarded by the server under a XEP-0356 presence privilege is read the same way.
// What is available is known only while connected: on disconnect it is forgotten. A resource
// that was available before the connection dropped and is seen again within REJOIN_MS of the
// next connect (the probes' answers, or the server's forwarded presence) did not come online:
// it is not told again (no second last published item for every subscriber on each reconnect).
// When the server ended the stream with <system-shutdown/>, the users' sessions ended with it:
// every resource seen after the reconnect is new. (A server killed without a stream error cannot
// be told from a dropped connection.) A restart of Hermod knows nobody's presence: there, every
// available resource counts as new.
// Bounds (anyone may send presence to a component): at most MAX_CONTACTS contacts, MAX_CONTACTS_PER_DOMAIN
// from one domain — a subscription beyond is declined (`unsubscribed`, RFC 6121 §3.2.2), one
// warning per refusal burst; the contacts kept are never pushed out. At most
// MAX_RESOURCES_PER_JID available resources per bare JID (the one silent longest forgotten: a resource whose
// unavailable presence was lost is likelier than a real 33rd session) and MAX_TRACKED available
// resources in all, beyond which only contacts' and the local server's users' presence is tracked
// (the server's own domains, `localDomains`, are not bound per domain either). Contact writes waiting for
// the store are merged per JID (the last word wins), so subscribe/unsubscribe churn queues nothing.
// Several Hermods on one store share the contacts: each follows the others' additions and
// removals through the store's changes feed (StateSpace.watch). Who is available is not shared:
// each process knows the presence the server routed to it.

import { readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { Element } from 'ltx';
import type { PresenceView } from '../pubsub/access.ts';
import type { StateSpace } from '../store/store.ts';
import { bareJid } from '../util/bare-jid.ts';
import { formatJid, parseJid } from './jid.ts';

/** Where an older Hermod kept the contacts, under dataDir (imported once). */
export const CONTACTS_FILE = 'presence-contacts.json';
export const CONTACTS_SPACE = 'presence-contacts';

/** Bounds of the presence kept (see the head comment). */
export const MAX_CONTACTS = 100_000;
export const MAX_CONTACTS_PER_DOMAIN = 10_000;
export const MAX_RESOURCES_PER_JID = 32;
export const MAX_TRACKED = 200_000;
/** Most contact writes in one store batch. */
const SAVE_BATCH = 1000;

/** Which full JIDs are available. */
export class PresenceTracker implements PresenceView {
  private readonly online = new Map<string, Set<string>>();
  private count = 0;

  isAvailable(jid: string): boolean {
    const parsed = parseJid(jid);
    if (!parsed) return false;
    const resources = this.online.get(bareJid(formatJid(parsed)));
    if (!resources) return false;
    return parsed.resource === '' ? resources.size > 0 : resources.has(parsed.resource);
  }

  /**
   * Marks a full JID available; true if it was not before. Beyond MAX_RESOURCES_PER_JID of the
   * bare JID, the resource whose presence came longest ago is forgotten; beyond MAX_TRACKED in all, a JID not `trusted`
   * (a contact) is not tracked (false).
   */
  available(bare: string, resource: string, trusted = true): boolean {
    let resources = this.online.get(bare);
    if (resources?.has(resource)) {
      // Seen again: the newest, so that the one forgotten first is the one silent longest.
      resources.delete(resource);
      resources.add(resource);
      return false;
    }
    if (this.count >= MAX_TRACKED && !trusted) return false;
    if (!resources) this.online.set(bare, (resources = new Set()));
    if (resources.size >= MAX_RESOURCES_PER_JID) {
      resources.delete(resources.values().next().value as string);
      this.count--;
    }
    resources.add(resource);
    this.count++;
    return true;
  }

  /** Marks a full JID (or, with resource '', every resource of the bare JID) unavailable. */
  unavailable(bare: string, resource: string): void {
    const resources = this.online.get(bare);
    if (!resources) return;
    const had = resources.size;
    if (resource === '') resources.clear();
    else resources.delete(resource);
    this.count -= had - resources.size;
    if (resources.size === 0) this.online.delete(bare);
  }

  clear(): void {
    this.online.clear();
    this.count = 0;
  }

  /** Every available full JID. */
  fullJids(): string[] {
    const out: string[] = [];
    for (const [bare, resources] of this.online) for (const resource of resources) out.push(`${bare}/${resource}`);
    return out;
  }

  /** Available full JIDs (for status and tests). */
  get size(): number {
    return this.count;
  }
}

interface PresenceLog {
  debug(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface PresenceHandlerOptions {
  /** The component JID. */
  jid: string;
  /** Where the contacts are kept (the store's state space CONTACTS_SPACE). */
  space: StateSpace;
  /** Where an older Hermod's contacts file may be (imported once by load()). */
  dataDir: string;
  /** Writes a stanza to the server (false when offline). */
  send: (stanza: Element) => boolean;
  tracker: PresenceTracker;
  /** A full JID became available (was not before). */
  onAvailable: (fullJid: string) => void;
  log: PresenceLog;
  /**
   * The attached server's own domains (its users): not bound per domain, and their presence is
   * always followed (what the server forwards under XEP-0356 comes from there). Default none.
   */
  localDomains?: ReadonlySet<string>;
}

/** How long after a (re)connect presence of a resource available before the drop counts as already known (ms). */
export const REJOIN_MS = 30_000;

export class PresenceHandler {
  private readonly contacts = new Set<string>();
  /** Contacts by domain (the per-domain bound). */
  private readonly byDomain = new Map<string, number>();
  /** Contact writes waiting for the store: bare JID -> added (true) or removed (false). */
  private readonly unsaved = new Map<string, boolean>();
  /** Subscriptions declined since one was last accepted (one warning per burst). */
  private declined = 0;
  /** Full JIDs available when the connection last dropped, not seen again yet (see the head comment). */
  private readonly before = new Set<string>();
  /** Until when `before` counts (ms since the epoch; Infinity while offline). */
  private beforeUntil = 0;
  private saving: Promise<void> | undefined;
  private unwatch: (() => void) | undefined;

  constructor(private readonly options: PresenceHandlerOptions) {}

  /** Bare JIDs that subscribed to the component's presence. */
  get contactList(): string[] {
    return [...this.contacts];
  }

  /**
   * Reads the contacts from the store, first importing an older Hermod's contacts file once
   * (renamed *.imported; an unreadable one is logged and skipped). Rejects with the store's error.
   */
  async load(): Promise<void> {
    const file = path.join(this.options.dataDir, CONTACTS_FILE);
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text !== undefined) {
      let old: string[] = [];
      try {
        const parsed: unknown = JSON.parse(text);
        if (Array.isArray(parsed)) old = parsed.filter((j): j is string => typeof j === 'string' && !!parseJid(j));
      } catch {
        this.options.log.warn('presence contacts file unreadable: not imported', { file });
      }
      await this.options.space.batch(old.map((jid) => ({ type: 'put', key: jid, value: '1' })));
      await rename(file, `${file}.imported`);
      this.options.log.debug('presence contacts of an older Hermod imported into the store (once)', { file, contacts: old.length });
    }
    // Followed before reading, so that nothing another process changes meanwhile is missed.
    this.unwatch ??= this.options.space.watch?.((jid) => void this.reread(jid));
    for await (const [jid] of this.options.space.range('')) this.addContact(jid);
  }

  private addContact(jid: string): void {
    if (this.contacts.has(jid)) return;
    this.contacts.add(jid);
    const domain = jid.slice(jid.indexOf('@') + 1);
    this.byDomain.set(domain, (this.byDomain.get(domain) ?? 0) + 1);
  }

  private removeContact(jid: string): boolean {
    if (!this.contacts.delete(jid)) return false;
    const domain = jid.slice(jid.indexOf('@') + 1);
    const left = (this.byDomain.get(domain) ?? 1) - 1;
    if (left > 0) this.byDomain.set(domain, left);
    else this.byDomain.delete(domain);
    return true;
  }

  private isLocal(bare: string): boolean {
    return this.options.localDomains?.has(bare.slice(bare.indexOf('@') + 1)) === true;
  }

  /** Why a new contact `jid` is declined (a bound reached), or undefined. */
  private full(jid: string): string | undefined {
    if (this.contacts.size >= MAX_CONTACTS) return `the component has ${MAX_CONTACTS} presence contacts`;
    const domain = jid.slice(jid.indexOf('@') + 1);
    if (!this.isLocal(jid) && (this.byDomain.get(domain) ?? 0) >= MAX_CONTACTS_PER_DOMAIN) return `the component has ${MAX_CONTACTS_PER_DOMAIN} presence contacts from ${domain}`;
    return undefined;
  }

  /** Another process added or removed a contact: read it again (a failed read is logged; the next change or start corrects it). */
  private async reread(jid: string): Promise<void> {
    try {
      if ((await this.options.space.get(jid)) === undefined) this.removeContact(jid);
      else this.addContact(jid);
    } catch (err) {
      this.options.log.warn('presence contact changed by another process not read', { jid, reason: String(err) });
    }
  }

  /** Stops following the other processes' changes to the contacts; resolves once the contact writes waiting are made. */
  async close(): Promise<void> {
    this.unwatch?.();
    this.unwatch = undefined;
    await this.saved();
  }

  /** Records a contact added or removed (the last word per JID, in batches; a failed write is logged). */
  private save(jid: string, added: boolean): void {
    this.unsaved.delete(jid); // re-inserted last: the order of the words is kept
    this.unsaved.set(jid, added);
    this.saving ??= (async () => {
      try {
        while (this.unsaved.size > 0) {
          const taken = [...this.unsaved].slice(0, SAVE_BATCH);
          for (const [j] of taken) this.unsaved.delete(j);
          await this.options.space
            .batch(taken.map(([key, put]) => (put ? { type: 'put' as const, key, value: '1' } : { type: 'del' as const, key })))
            .catch((err: unknown) => this.options.log.warn('presence contacts not saved', { contacts: taken.length, first: taken[0]?.[0], reason: String(err) }));
        }
      } finally {
        this.saving = undefined; // in the same turn as the last look at `unsaved`: a save() after it starts anew
      }
    })();
  }

  /** Resolves once the contact writes waiting have been made (or logged as failed). */
  async saved(): Promise<void> {
    while (this.saving) await this.saving;
  }

  private presence(to: string, type?: string): Element {
    return new Element('presence', { from: this.options.jid, to, ...(type ? { type } : {}) });
  }

  /** The component is online: tell contacts and ask for their presence. */
  online(): void {
    this.beforeUntil = Date.now() + REJOIN_MS;
    for (const contact of this.contacts) {
      this.options.send(this.presence(contact));
      this.options.send(this.presence(contact, 'probe'));
    }
  }

  /**
   * The connection ended: presence is unknown until the next connect. Who was available is
   * remembered for REJOIN_MS after it — unless the server said it was shutting down
   * (`serverShutdown`): that ended the users' sessions too, so their presence after it is new.
   */
  offline(serverShutdown = false): void {
    if (serverShutdown || Date.now() > this.beforeUntil) this.before.clear();
    if (!serverShutdown) for (const jid of this.options.tracker.fullJids()) this.before.add(jid);
    this.beforeUntil = Number.POSITIVE_INFINITY;
    this.options.tracker.clear();
  }

  /** Whether `full` was available before the connection dropped (and is now seen again): consumed. */
  private rejoined(full: string): boolean {
    if (Date.now() > this.beforeUntil) {
      this.before.clear();
      return false;
    }
    return this.before.delete(full);
  }

  /** A resource (or, with '', every resource of `bare`) went offline: when it comes back it is new. */
  private forgetBefore(bare: string, resource: string): void {
    if (resource !== '') this.before.delete(`${bare}/${resource}`);
    else for (const jid of this.before) if (jid.startsWith(`${bare}/`)) this.before.delete(jid);
  }

  handle(stanza: Element): void {
    const from = parseJid(String(stanza.attrs.from ?? ''));
    if (!from || (from.local === '' && from.resource === '')) return; // servers and components: nothing to track
    const to = parseJid(String(stanza.attrs.to ?? this.options.jid));
    if (to && (to.local !== '' || to.resource !== '')) return; // not for the service itself
    const bare = bareJid(formatJid(from));
    const type = stanza.attrs.type as string | undefined;
    const { tracker, send, log } = this.options;
    switch (type) {
      case undefined:
        if (from.resource !== '' && tracker.available(bare, from.resource, this.contacts.has(bare) || this.isLocal(bare)) && !this.rejoined(`${bare}/${from.resource}`)) this.options.onAvailable(`${bare}/${from.resource}`);
        return;
      case 'unavailable':
        tracker.unavailable(bare, from.resource);
        this.forgetBefore(bare, from.resource);
        return;
      case 'subscribe': {
        const refused = this.contacts.has(bare) ? undefined : this.full(bare);
        if (refused) {
          // RFC 6121 §3.2.2: a subscription request declined.
          send(this.presence(bare, 'unsubscribed'));
          if (this.declined++ === 0) log.warn('presence subscriptions declined: too many contacts', { jid: bare, reason: refused });
          return;
        }
        this.declined = 0;
        send(this.presence(bare, 'subscribed'));
        send(this.presence(bare));
        if (!this.contacts.has(bare)) {
          this.addContact(bare);
          this.save(bare, true);
          send(this.presence(bare, 'subscribe'));
          log.debug('presence subscription accepted', { jid: bare });
        }
        return;
      }
      case 'unsubscribe':
      case 'unsubscribed':
        if (type === 'unsubscribe') send(this.presence(bare, 'unsubscribed'));
        tracker.unavailable(bare, '');
        this.forgetBefore(bare, '');
        if (this.removeContact(bare)) {
          this.save(bare, false);
          log.debug('presence subscription ended', { jid: bare, by: type });
        }
        return;
      case 'probe':
        send(this.presence(bare));
        return;
      default:
        return; // subscribed (our request accepted), error
    }
  }
}
