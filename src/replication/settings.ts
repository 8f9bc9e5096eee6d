// Replication settings kept in the application's non-replicated database (ajatus_db), as the
// seed asks: component credentials, per-tag access (whitelist by default), and which partner
// nodes to follow. Documents (all optional except credentials when the config file has none):
//   hermod:credentials       {"component": {"jid", "secret", "server"}}
//   hermod:tag:<tag>         {"access_model": "whitelist"|"open", "whitelist": ["jid", …], "title"?}
//   hermod:partner:<jid>     {"follow": "all"|"none"|["/tags/x", …], "targetDb"?: "db name",
//                             "transform"?: {"<node>"|"*": "file.xsl" | {"stylesheet", "params"}}}
// Changes are picked up from the database's _changes feed without restart. A malformed settings
// document is logged (with the field) and ignored, never fatal. Secrets are never logged.

import { EventEmitter } from 'node:events';
import type { DocumentScope } from 'nano';
import type { Logger } from '../log.ts';
import { normalizeJid } from '../xmpp/jid.ts';
import { parseTransform, type TransformSpec } from '../config/transform-spec.ts';

export interface TagSettings {
  accessModel: 'whitelist' | 'open';
  whitelist: string[];
  title?: string;
}

export interface PartnerSettings {
  follow: 'all' | 'none' | string[];
  /** Local database the partner's documents are written to (default: the content database). */
  targetDb?: string;
  /** Stylesheet per followed node (or "*" for every other one): the leaves are transformed first. */
  transform?: Record<string, TransformSpec>;
}

export interface Credentials {
  jid: string;
  secret: string;
  server: string;
}

export const DEFAULT_TAG_SETTINGS: TagSettings = { accessModel: 'whitelist', whitelist: [] };
export const DEFAULT_PARTNER_SETTINGS: PartnerSettings = { follow: 'all' };

type Doc = Record<string, unknown> & { _id: string };

export class SettingsError extends Error {}

export function parseTagSettings(doc: Doc): TagSettings {
  const access = doc.access_model ?? 'whitelist';
  if (access !== 'whitelist' && access !== 'open') throw new SettingsError(`${doc._id}: access_model must be "whitelist" or "open", got ${JSON.stringify(access)}`);
  const list = doc.whitelist ?? [];
  if (!Array.isArray(list)) throw new SettingsError(`${doc._id}: whitelist must be an array of JIDs`);
  const whitelist = list.map((j, i) => {
    const jid = typeof j === 'string' ? normalizeJid(j) : undefined;
    if (!jid || jid.includes('/')) throw new SettingsError(`${doc._id}: whitelist[${i}] is not a bare JID: ${JSON.stringify(j)}`);
    return jid;
  });
  return { accessModel: access, whitelist, ...(typeof doc.title === 'string' ? { title: doc.title } : {}) };
}

const DB_NAME = /^[a-z][a-z0-9_$()+/-]*$/;

/** The stylesheet a partner's settings name for a node, if any. */
export const transformFor = (settings: PartnerSettings, node: string): TransformSpec | undefined => settings.transform?.[node] ?? settings.transform?.['*'];

export function parsePartnerSettings(doc: Doc): PartnerSettings {
  const follow = doc.follow ?? 'all';
  const targetDb = doc.targetDb;
  if (targetDb !== undefined && (typeof targetDb !== 'string' || !DB_NAME.test(targetDb))) {
    throw new SettingsError(`${doc._id}: targetDb must be a CouchDB database name (lower case, starting with a letter), got ${JSON.stringify(targetDb)}`);
  }
  const target = {
    ...(targetDb === undefined ? {} : { targetDb: targetDb as string }),
    ...(doc.transform === undefined ? {} : { transform: parseTransform(doc.transform, `${doc._id}: transform`) }),
  };
  if (follow === 'all' || follow === 'none') return { follow, ...target };
  if (Array.isArray(follow) && follow.every((n) => typeof n === 'string')) return { follow: follow as string[], ...target };
  throw new SettingsError(`${doc._id}: follow must be "all", "none" or an array of node ids`);
}

export function parseCredentials(doc: Doc): Credentials {
  const c = doc.component as Record<string, unknown> | undefined;
  if (!c || typeof c !== 'object') throw new SettingsError(`${doc._id}: component must be an object with jid, secret, server`);
  for (const key of ['jid', 'secret', 'server']) {
    if (typeof c[key] !== 'string' || (c[key] as string).length === 0) throw new SettingsError(`${doc._id}: component.${key} must be a non-empty string`);
  }
  return { jid: c.jid as string, secret: c.secret as string, server: c.server as string };
}

/** Emits 'tag' (tag, settings) and 'partner' (jid, settings) when a settings document changes. */
export class AppSettings extends EventEmitter {
  private readonly tags = new Map<string, TagSettings>();
  private readonly partners = new Map<string, PartnerSettings>();
  private stopped = false;
  private since: string = 'now';

  constructor(
    private readonly db: DocumentScope<Doc>,
    private readonly log: Logger,
  ) {
    super();
  }

  tag(tag: string): TagSettings {
    return this.tags.get(tag) ?? DEFAULT_TAG_SETTINGS;
  }

  /** Tags that have a settings document. */
  configuredTags(): string[] {
    return [...this.tags.keys()];
  }

  partner(jid: string): PartnerSettings {
    return this.partners.get(jid) ?? DEFAULT_PARTNER_SETTINGS;
  }

  async credentials(): Promise<Credentials | undefined> {
    try {
      return parseCredentials((await this.db.get('hermod:credentials')) as Doc);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
  }

  /** Reads every hermod:* document, then follows changes. */
  async start(): Promise<void> {
    const info = await this.db.info();
    this.since = String(info.update_seq);
    const res = await this.db.list({ startkey: 'hermod:', endkey: 'hermod:\ufff0', include_docs: true });
    for (const row of res.rows) if (row.doc) this.apply(row.doc as Doc);
    this.follow();
  }

  private following = false;

  stop(): void {
    this.stopped = true;
    this.db.changesReader.stop();
  }

  private apply(doc: Doc & { _deleted?: boolean }): void {
    const id = doc._id;
    try {
      if (id.startsWith('hermod:tag:')) {
        const tag = id.slice('hermod:tag:'.length);
        const settings = doc._deleted ? DEFAULT_TAG_SETTINGS : parseTagSettings(doc);
        this.tags.set(tag, settings);
        this.emit('tag', tag, settings);
      } else if (id.startsWith('hermod:partner:')) {
        const jid = normalizeJid(id.slice('hermod:partner:'.length));
        if (!jid) throw new SettingsError(`${id}: not a JID after hermod:partner:`);
        const settings = doc._deleted ? DEFAULT_PARTNER_SETTINGS : parsePartnerSettings(doc);
        this.partners.set(jid, settings);
        this.emit('partner', jid, settings);
      } else if (id === 'hermod:credentials' && !doc._deleted) {
        parseCredentials(doc); // validate now; applied at the next start
      }
    } catch (err) {
      this.log.warn('ignoring malformed settings document', { doc: id, reason: err instanceof Error ? err.message : String(err) });
    }
  }

  private follow(): void {
    // Once: start() may be called again while an earlier call is still under way (start-up gives
    // up waiting for an answer after 20 s and asks again: src/app/wait-for.ts).
    if (this.following) return;
    this.following = true;
    this.db.changesReader
      .start({ since: this.since, includeDocs: true, timeout: 25_000 })
      .on('change', (change: { id: string; deleted?: boolean; doc?: Doc }) => {
        if (change.id.startsWith('hermod:')) this.apply({ ...(change.doc as Doc), _id: change.id, ...(change.deleted ? { _deleted: true } : {}) });
      })
      .on('error', (err: Error) => {
        if (!this.stopped) this.log.warn('settings feed interrupted; nano retries with backoff', { reason: err.message });
      });
  }
}
