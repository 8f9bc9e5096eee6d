// The hermod config file: JSON, validated into a typed HermodConfig. Every problem is one
// ConfigError whose message names the key (e.g. "component.jid: …"). Relative paths are
// resolved against the config file's folder. This is the public contract documented in README.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { LOG_LEVELS, type LogLevel } from '../log.ts';
import { isDomainJid, normalizeJid, parseJid } from '../xmpp/jid.ts';
import { DEFAULT_LIMITS, type Limits } from '../pubsub/limits.ts';
import { MAX_ITEMS_LIMIT } from '../pubsub/node-config.ts';
import { readMidgardConfig, type MidgardConfig } from './midgard-config.ts';

export interface AppDbConfig {
  /** CouchDB server URL (may carry credentials; never logged). */
  url: string;
  /** The application's non-replicated database: settings, whitelists, credentials. */
  db: string;
}

export interface AjatusConfig {
  contentDb: string;
  profile: string;
  codec: 'json' | 'xml';
  discoveryIntervalSeconds: number;
  inlineAttachmentMax: number;
}

export interface HermodConfig {
  /** Absent only when appDb is given: then read from its hermod:credentials document. */
  component: { jid: string; secret: string; server: string } | undefined;
  appDb: AppDbConfig | undefined;
  ajatus: AjatusConfig;
  /** Midgard replication (D-Bus/spool sources, inbound spool); absent: off. */
  midgard: MidgardConfig | undefined;
  dataDir: string;
  pubsub: {
    admins: string[];
    /** Domains whose users may create nodes; undefined: the server the component is attached to. */
    creatorDomains: string[] | undefined;
    /** Name shown in disco#info. */
    name: string;
    /** Consecutive bounced notifications after which a subscription is removed (XEP-0060 §4.4). */
    maxBounces: number;
  };
  store: StoreConfig;
  /** Per-subscription XSLT: where stylesheets are looked up, time and output bounds per transform. */
  transforms: { dir: string; timeoutMs: number; maxOutput: number };
  /** Prometheus metrics over HTTP; absent: off. */
  metrics: { port: number; host: string } | undefined;
  log: { level: LogLevel };
  /** Items per node, nodes per owner, publish rate per sender (admins and the component exempt). */
  limits: Limits;
}

export type StoreConfig =
  | { backend: 'level'; sync: boolean }
  /** url may carry credentials; never logged. */
  | { backend: 'couchdb'; sync: boolean; couchdb: { url: string; db: string } };

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: Json): string => (typeof v === 'string' ? `"${v}"` : JSON.stringify(v) ?? String(v));

class Reader {
  constructor(private readonly errors: string[]) {}

  section(obj: Record<string, Json>, key: string, prefix: string, required: boolean): Record<string, Json> | undefined {
    const v = obj[key];
    if (v === undefined) {
      if (required) this.errors.push(`${prefix}${key}: missing (an object is required)`);
      return undefined;
    }
    if (!isObject(v)) {
      this.errors.push(`${prefix}${key}: must be an object, got ${show(v)}`);
      return undefined;
    }
    return v;
  }

  string(obj: Record<string, Json>, key: string, prefix: string, required: boolean): string | undefined {
    const v = obj[key];
    if (v === undefined) {
      if (required) this.errors.push(`${prefix}${key}: missing (a string is required)`);
      return undefined;
    }
    if (typeof v !== 'string' || v.length === 0) {
      this.errors.push(`${prefix}${key}: must be a non-empty string, got ${show(v)}`);
      return undefined;
    }
    return v;
  }

  boolean(obj: Record<string, Json>, key: string, prefix: string): boolean | undefined {
    const v = obj[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') {
      this.errors.push(`${prefix}${key}: must be true or false, got ${show(v)}`);
      return undefined;
    }
    return v;
  }

  stringArray(obj: Record<string, Json>, key: string, prefix: string): string[] | undefined {
    const v = obj[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((e) => typeof e !== 'string')) {
      this.errors.push(`${prefix}${key}: must be an array of strings, got ${show(v)}`);
      return undefined;
    }
    return v as string[];
  }

  unknownKeys(obj: Record<string, Json>, known: string[], prefix: string): void {
    for (const key of Object.keys(obj)) {
      if (!known.includes(key)) this.errors.push(`${prefix}${key}: unknown key (known: ${known.join(', ')})`);
    }
  }
}

/** Validates parsed JSON. `baseDir` resolves relative paths. Throws ConfigError listing every problem. */
export function validateConfig(raw: Json, baseDir: string): HermodConfig {
  const errors: string[] = [];
  const r = new Reader(errors);
  if (!isObject(raw)) throw new ConfigError(`the configuration must be a JSON object, got ${show(raw)}`);
  r.unknownKeys(raw, ['component', 'dataDir', 'pubsub', 'store', 'log', 'appDb', 'ajatus', 'metrics', 'midgard', 'transforms', 'limits'], '');
  const midgard = readMidgardConfig(raw.midgard, baseDir, errors);

  const appDbRaw = r.section(raw, 'appDb', '', false);
  let appDb: AppDbConfig | undefined;
  if (appDbRaw) {
    r.unknownKeys(appDbRaw, ['url', 'db'], 'appDb.');
    const url = r.string(appDbRaw, 'url', 'appDb.', true);
    if (url !== undefined && !/^https?:\/\/[^\s]+$/.test(url)) errors.push('appDb.url: must be an http(s) URL of a CouchDB server');
    const db = r.string(appDbRaw, 'db', 'appDb.', false) ?? 'ajatus_db';
    if (url !== undefined) appDb = { url, db };
  }
  const ajatusRaw = r.section(raw, 'ajatus', '', false) ?? {};
  r.unknownKeys(ajatusRaw, ['contentDb', 'profile', 'codec', 'discoveryIntervalSeconds', 'inlineAttachmentMax'], 'ajatus.');
  const codec = r.string(ajatusRaw, 'codec', 'ajatus.', false) ?? 'json';
  if (codec !== 'json' && codec !== 'xml') errors.push(`ajatus.codec: must be "json" or "xml", got ${show(codec)}`);
  const positive = (key: string, fallback: number): number => {
    const v = ajatusRaw[key];
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !(v > 0)) errors.push(`ajatus.${key}: must be a positive number, got ${show(v)}`);
    return typeof v === 'number' ? v : fallback;
  };
  const ajatus: AjatusConfig = {
    contentDb: r.string(ajatusRaw, 'contentDb', 'ajatus.', false) ?? 'ajatus_db_content',
    profile: r.string(ajatusRaw, 'profile', 'ajatus.', false) ?? 'ajatus',
    codec: codec === 'xml' ? 'xml' : 'json',
    discoveryIntervalSeconds: positive('discoveryIntervalSeconds', 300),
    inlineAttachmentMax: positive('inlineAttachmentMax', 128 * 1024),
  };

  const component = r.section(raw, 'component', '', !appDb);
  let jid: string | undefined;
  let secret: string | undefined;
  let server: string | undefined;
  if (component) {
    r.unknownKeys(component, ['jid', 'secret', 'server'], 'component.');
    const rawJid = r.string(component, 'jid', 'component.', true);
    if (rawJid !== undefined) {
      if (!isDomainJid(rawJid)) errors.push(`component.jid: must be a domain JID such as "pubsub.example.org" (no @ or /), got ${show(rawJid)}`);
      else jid = normalizeJid(rawJid);
    }
    secret = r.string(component, 'secret', 'component.', true);
    const rawServer = r.string(component, 'server', 'component.', true);
    if (rawServer !== undefined) {
      const m = /^xmpp:\/\/([^/:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\/?$/.exec(rawServer);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) errors.push(`component.server: must look like "xmpp://127.0.0.1:5347" (host and component port), got ${show(rawServer)}`);
      else server = rawServer;
    }
  }

  const dataDir = path.resolve(baseDir, r.string(raw, 'dataDir', '', false) ?? './data');

  const pubsub = r.section(raw, 'pubsub', '', false) ?? {};
  r.unknownKeys(pubsub, ['admins', 'creatorDomains', 'name', 'maxBounces'], 'pubsub.');
  const admins: string[] = [];
  (r.stringArray(pubsub, 'admins', 'pubsub.') ?? []).forEach((a, i) => {
    const parsed = parseJid(a);
    if (!parsed || parsed.resource) errors.push(`pubsub.admins[${i}]: must be a bare JID such as "admin@example.org", got ${show(a)}`);
    else admins.push(normalizeJid(a) as string);
  });
  const creatorDomains: string[] = [];
  const rawCreators = r.stringArray(pubsub, 'creatorDomains', 'pubsub.');
  rawCreators?.forEach((d, i) => {
    if (!isDomainJid(d)) errors.push(`pubsub.creatorDomains[${i}]: must be a domain such as "example.org", got ${show(d)}`);
    else creatorDomains.push(d.toLowerCase());
  });
  const creators = rawCreators ? creatorDomains : jid ? [parentDomain(jid)] : undefined;
  const name = r.string(pubsub, 'name', 'pubsub.', false) ?? 'Hermod';
  const maxBounces = pubsub.maxBounces ?? 3;
  if (typeof maxBounces !== 'number' || !Number.isInteger(maxBounces) || maxBounces < 1) errors.push(`pubsub.maxBounces: must be a whole number of at least 1, got ${show(maxBounces)}`);

  const store = r.section(raw, 'store', '', false) ?? {};
  r.unknownKeys(store, ['sync', 'backend', 'couchdb'], 'store.');
  const sync = r.boolean(store, 'sync', 'store.') ?? false;
  const backend = r.string(store, 'backend', 'store.', false) ?? 'level';
  if (backend !== 'level' && backend !== 'couchdb') errors.push(`store.backend: must be "level" or "couchdb", got ${show(backend)}`);
  const couchRaw = r.section(store, 'couchdb', 'store.', backend === 'couchdb');
  let couchdb: { url: string; db: string } | undefined;
  if (couchRaw) {
    r.unknownKeys(couchRaw, ['url', 'db'], 'store.couchdb.');
    const url = r.string(couchRaw, 'url', 'store.couchdb.', true);
    if (url !== undefined && !/^https?:\/\/[^\s]+$/.test(url)) errors.push('store.couchdb.url: must be an http(s) URL of a CouchDB server');
    const db = r.string(couchRaw, 'db', 'store.couchdb.', false) ?? 'hermod';
    if (!/^[a-z][a-z0-9_$()+/-]*$/.test(db)) errors.push(`store.couchdb.db: must be a CouchDB database name (lowercase letter first, then a-z 0-9 _$()+-/), got ${show(db)}`);
    if (url !== undefined) couchdb = { url, db };
  }
  if (couchRaw && backend !== 'couchdb') errors.push('store.couchdb: only used with store.backend "couchdb"');

  const metricsRaw = r.section(raw, 'metrics', '', false);
  let metrics: { port: number; host: string } | undefined;
  if (metricsRaw) {
    r.unknownKeys(metricsRaw, ['port', 'host'], 'metrics.');
    const port = metricsRaw.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) errors.push(`metrics.port: must be a TCP port number (1-65535), got ${show(port)}`);
    const host = r.string(metricsRaw, 'host', 'metrics.', false) ?? '127.0.0.1';
    if (typeof port === 'number') metrics = { port, host };
  }

  const transformsRaw = r.section(raw, 'transforms', '', false) ?? {};
  r.unknownKeys(transformsRaw, ['dir', 'timeoutMs', 'maxOutput'], 'transforms.');
  const bound = (key: string, fallback: number): number => {
    const v = transformsRaw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) errors.push(`transforms.${key}: must be a positive whole number, got ${show(v)}`);
    return typeof v === 'number' ? v : fallback;
  };
  const transforms = {
    dir: path.resolve(baseDir, r.string(transformsRaw, 'dir', 'transforms.', false) ?? '.'),
    timeoutMs: bound('timeoutMs', 5_000),
    maxOutput: bound('maxOutput', 8 * 1024 * 1024),
  };

  const limitsRaw = r.section(raw, 'limits', '', false) ?? {};
  r.unknownKeys(limitsRaw, ['maxItemsPerNode', 'maxNodesPerOwner', 'publishRate'], 'limits.');
  const whole = (obj: Record<string, Json>, key: string, prefix: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number => {
    const v = obj[key] ?? fallback;
    if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= max) return v;
    errors.push(`${prefix}${key}: must be a whole number ${max === Number.MAX_SAFE_INTEGER ? 'of at least 1' : `from 1 to ${max}`}, got ${show(v)}`);
    return fallback;
  };
  let publishRate = DEFAULT_LIMITS.publishRate;
  const rateRaw = limitsRaw.publishRate;
  if (rateRaw === false) publishRate = undefined;
  else if (rateRaw !== undefined && !isObject(rateRaw)) errors.push(`limits.publishRate: must be false (no limit) or an object {"perSecond", "burst"}, got ${show(rateRaw)}`);
  else if (isObject(rateRaw)) {
    r.unknownKeys(rateRaw, ['perSecond', 'burst'], 'limits.publishRate.');
    const perSecond = rateRaw.perSecond ?? DEFAULT_LIMITS.publishRate?.perSecond;
    if (typeof perSecond !== 'number' || !(perSecond > 0) || !Number.isFinite(perSecond)) errors.push(`limits.publishRate.perSecond: must be a positive number, got ${show(perSecond)}`);
    const burst = whole(rateRaw, 'burst', 'limits.publishRate.', DEFAULT_LIMITS.publishRate?.burst ?? 1);
    if (typeof perSecond === 'number' && perSecond > 0) publishRate = { perSecond, burst };
  }
  const limits: Limits = {
    maxItemsPerNode: whole(limitsRaw, 'maxItemsPerNode', 'limits.', DEFAULT_LIMITS.maxItemsPerNode, MAX_ITEMS_LIMIT),
    maxNodesPerOwner: whole(limitsRaw, 'maxNodesPerOwner', 'limits.', DEFAULT_LIMITS.maxNodesPerOwner),
    publishRate,
  };

  const log = r.section(raw, 'log', '', false) ?? {};
  r.unknownKeys(log, ['level'], 'log.');
  const level = r.string(log, 'level', 'log.', false) ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) errors.push(`log.level: must be one of ${LOG_LEVELS.join(', ')}, got ${show(level)}`);

  if (errors.length > 0 || (!appDb && (!jid || !secret || !server))) throw new ConfigError(errors.join('\n'));
  return {
    component: jid && secret && server ? { jid, secret, server } : undefined,
    appDb,
    ajatus,
    midgard,
    dataDir,
    pubsub: { admins, creatorDomains: creators, name, maxBounces: typeof maxBounces === 'number' ? maxBounces : 3 },
    store: backend === 'couchdb' && couchdb ? { backend, sync, couchdb } : { backend: 'level', sync },
    transforms,
    metrics,
    log: { level: level as LogLevel },
    limits,
  };
}

/** "pubsub.example.org" -> "example.org" (a single-label JID is its own parent). */
export function parentDomain(domain: string): string {
  const dot = domain.indexOf('.');
  return dot === -1 || dot === domain.length - 1 ? domain : domain.slice(dot + 1);
}

export async function loadConfig(file: string): Promise<HermodConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let raw: Json;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  try {
    return validateConfig(raw, path.dirname(path.resolve(file)));
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`config file ${file}: ${err.message}`);
    throw err;
  }
}
