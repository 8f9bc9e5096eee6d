// Presence at the component: answering presence subscriptions, and knowing which subscribers
// are available (pubsub#presence_based_delivery, send_last_published_item on_sub_and_presence).
//
// A component has no roster on the server, so Hermod keeps its own list of contacts (bare JIDs
// that subscribed to its presence) in dataDir/presence-contacts.json:
// - subscribe -> `subscribed`, and `subscribe` back (to receive the contact's presence);
// - unsubscribe -> `unsubscribed`; unsubscribed -> forgotten, its presence too;
// - probe -> the component's available presence;
// - on every connect: available presence to each contact and a probe (their servers answer with
//   the current presence of every resource).
// Presence forwarded by the server under a XEP-0356 presence privilege is read the same way.
// What is available is known only while connected: on disconnect it is forgotten.

import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Element } from 'ltx';
import type { PresenceView } from '../pubsub/access.ts';
import { bareJid } from '../util/bare-jid.ts';
import { formatJid, parseJid } from './jid.ts';

export const CONTACTS_FILE = 'presence-contacts.json';

/** Which full JIDs are available. */
export class PresenceTracker implements PresenceView {
  private readonly online = new Map<string, Set<string>>();

  isAvailable(jid: string): boolean {
    const parsed = parseJid(jid);
    if (!parsed) return false;
    const resources = this.online.get(bareJid(formatJid(parsed)));
    if (!resources) return false;
    return parsed.resource === '' ? resources.size > 0 : resources.has(parsed.resource);
  }

  /** Marks a full JID available; true if it was not before. */
  available(bare: string, resource: string): boolean {
    let resources = this.online.get(bare);
    if (!resources) this.online.set(bare, (resources = new Set()));
    if (resources.has(resource)) return false;
    resources.add(resource);
    return true;
  }

  /** Marks a full JID (or, with resource '', every resource of the bare JID) unavailable. */
  unavailable(bare: string, resource: string): void {
    const resources = this.online.get(bare);
    if (!resources) return;
    if (resource === '') resources.clear();
    else resources.delete(resource);
    if (resources.size === 0) this.online.delete(bare);
  }

  clear(): void {
    this.online.clear();
  }

  /** Available full JIDs (for status and tests). */
  get size(): number {
    let n = 0;
    for (const r of this.online.values()) n += r.size;
    return n;
  }
}

interface PresenceLog {
  debug(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface PresenceHandlerOptions {
  /** The component JID. */
  jid: string;
  dataDir: string;
  /** Writes a stanza to the server (false when offline). */
  send: (stanza: Element) => boolean;
  tracker: PresenceTracker;
  /** A full JID became available (was not before). */
  onAvailable: (fullJid: string) => void;
  log: PresenceLog;
}

export class PresenceHandler {
  private readonly contacts: Set<string>;
  private readonly file: string;

  constructor(private readonly options: PresenceHandlerOptions) {
    this.file = path.join(options.dataDir, CONTACTS_FILE);
    this.contacts = new Set(this.load());
  }

  /** Bare JIDs that subscribed to the component's presence. */
  get contactList(): string[] {
    return [...this.contacts];
  }

  private load(): string[] {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch {
      return [];
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (Array.isArray(parsed)) return parsed.filter((j): j is string => typeof j === 'string' && !!parseJid(j));
    } catch {
      /* below */
    }
    this.options.log.warn('presence contacts file unreadable: starting with no contacts', { file: this.file });
    return [];
  }

  private save(): void {
    const tmp = `${this.file}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, JSON.stringify([...this.contacts].sort()));
    renameSync(tmp, this.file);
  }

  private presence(to: string, type?: string): Element {
    return new Element('presence', { from: this.options.jid, to, ...(type ? { type } : {}) });
  }

  /** The component is online: tell contacts and ask for their presence. */
  online(): void {
    for (const contact of this.contacts) {
      this.options.send(this.presence(contact));
      this.options.send(this.presence(contact, 'probe'));
    }
  }

  /** The connection ended: presence is unknown until the next connect. */
  offline(): void {
    this.options.tracker.clear();
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
        if (from.resource !== '' && tracker.available(bare, from.resource)) this.options.onAvailable(`${bare}/${from.resource}`);
        return;
      case 'unavailable':
        tracker.unavailable(bare, from.resource);
        return;
      case 'subscribe':
        send(this.presence(bare, 'subscribed'));
        send(this.presence(bare));
        if (!this.contacts.has(bare)) {
          this.contacts.add(bare);
          this.save();
          send(this.presence(bare, 'subscribe'));
          log.debug('presence subscription accepted', { jid: bare });
        }
        return;
      case 'unsubscribe':
      case 'unsubscribed':
        if (type === 'unsubscribe') send(this.presence(bare, 'unsubscribed'));
        tracker.unavailable(bare, '');
        if (this.contacts.delete(bare)) {
          this.save();
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
