// The hermod config file: JSON, validated into a typed HermodConfig. Every problem is one
// ConfigError whose message names the key (e.g. "component.jid: …"). Relative paths are
// resolved against the config file's folder. This is the public contract documented in README.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { LOG_LEVELS } from '../log.ts';
import { isDomainJid, normalizeJid } from '../xmpp/jid.ts';
import { DEFAULT_LIMITS, type PublishRate } from '../pubsub/limits.ts';
import { MAX_ITEMS_LIMIT } from '../pubsub/node-config.ts';
import { midgardSchema } from './midgard-config.ts';
import { bareJid, check, describedKeys, digestMs, filePath, must, parsed, positive, text, whenObject, whole, wholeOrZero, withoutValue, type KeyDoc } from './schema-kit.ts';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** A CouchDB server URL; may carry credentials, so a message never echoes it. */
const couchUrl = () => text().regex(/^https?:\/\/[^\s]+$/, withoutValue('must be an http(s) URL of a CouchDB server'));
const COUCH_DB = 'must be a CouchDB database name (lowercase letter first, then a-z 0-9 _$()+-/)';
const PORT = 'must be a TCP port number (1-65535)';
const RATE = DEFAULT_LIMITS.publishRate as PublishRate;
const REQUIRED = 'required (unless in `appDb`)';

function isComponentPort(server: string): boolean {
  const m = /^xmpp:\/\/([^/:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\/?$/.exec(server);
  return !!m && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
}

/**
 * The config file, paths resolved against `baseDir`. One line per key: its schema (the error
 * messages), default and meaning (`.describe()`: the README table and `hermod --help`; keys
 * without one are documented by their parent's).
 */
function buildSchema(baseDir: string) {
  return z
    .strictObject(
      {
        component: z
          .strictObject({
            jid: parsed('must be a domain JID such as "pubsub.example.org" (no @ or /)', (s) => (isDomainJid(s) ? normalizeJid(s) : undefined)).meta({ description: "the component's domain JID, as declared on the server", default: REQUIRED }),
            secret: text().meta({ description: 'the shared secret of the component', default: REQUIRED }),
            server: text().refine(isComponentPort, must('must look like "xmpp://127.0.0.1:5347" (host and component port)')).meta({ description: "`xmpp://host:port` of the server's component listener", default: REQUIRED }),
          })
          .optional(),
        dataDir: filePath(baseDir).prefault('./data').describe('where the embedded store, the quarantine (refused and failed leaves) and the status socket live (an older Hermod\'s notification journal and presence contacts there are imported into the store once)'),
        appDb: z
          .strictObject({
            url: couchUrl().describe('CouchDB server of the application database: turns on Ajatus replication; `component` may then live there (`hermod:credentials`)'),
            db: text().default('ajatus_db').describe("the application's non-replicated database: settings, whitelists, credentials"),
          })
          .optional(),
        ajatus: z
          .strictObject({
            contentDb: text().default('ajatus_db_content').describe('the database replicated'),
            profile: text().default('ajatus').describe('where type, tags, deleted flag, title and contact JID sit in documents: `ajatus` (`value.tags.val`, …) or `plain` (`tags`, …)'),
            codec: z.enum(['json', 'xml'], must('must be "json" or "xml"')).default('json').describe('payload body: `json` (XEP-0335 JSON container) or `xml` (XSLT 3.0 json-to-xml form)'),
            discoveryIntervalSeconds: positive().default(300).describe('how often partners are re-discovered (also on every edit of a contact or partner setting, and after a failed attempt within seconds: 2 s doubling up to this interval); new nodes a partner makes us a member of are followed at once, without waiting for it'),
            inlineAttachmentMax: positive().default(128 * 1024).describe('attachment bytes carried inline per document (smallest first); the rest go through XEP-0363 upload'),
            notificationDigestMs: digestMs().default(25).describe('pubsub#digest_frequency (ms) Hermod asks partners\' services for on its subscriptions (XEP-0060 notification digests: the first change after a quiet period comes at once, later ones within this many ms arrive together in one message); only where the partner offers `pubsub#digest`, else one notification per item; 0: one notification per item (digests an earlier run asked for are turned off again as each subscription is set up)'),
            packedPayloads: z.boolean(must('must be true or false')).default(true).describe('ask partners\' services for packed payloads on our subscriptions (`{urn:hermod:pubsub:0}packed`, where their options form offers it: each payload travels as one base64 text, far less for the XMPP servers to parse; see "Packed payloads"); `false` turns it off again at each subscription Hermod follows (set up again at every start; each one turned off is logged) — the way back to a Hermod that cannot read packed payloads'),
            liveBacklogItems: positive().default(2000).describe('partners\' items (publications and retractions) received live and not yet written before further notifications of a node are left to its history (XEP-0313) and read back page by page at the database\'s pace (a service without history: only their item ids kept, the items read by id later): flow control for a partner that publishes faster than this database writes (a first sync)'),
          })
          .prefault({}),
        pubsub: z
          .strictObject({
            admins: z.array(bareJid('must be a bare JID such as "admin@example.org"'), must('must be an array of strings')).default([]).describe('bare JIDs with owner rights on every node'),
            creatorDomains: z
              .array(parsed('must be a domain such as "example.org"', (d) => (isDomainJid(d) ? d.toLowerCase() : undefined)), must('must be an array of strings'))
              .optional()
              .meta({ description: 'domains whose users may create nodes', default: "the component's parent domain (`example.org` for `pubsub.example.org`)" }),
            name: text().default('Hermod').describe('service name in disco#info'),
            maxBounces: whole().default(3).describe('notifications to a JID that come back as errors saying it cannot be reached, in a row, before its subscriptions are removed'),
            bounceWindowSeconds: wholeOrZero().default(600).describe('how long a JID must keep bouncing (seconds from the first of those bounces) before its subscriptions are removed: a server restarting costs nobody their subscriptions'),
          })
          .prefault({}),
        limits: z
          .strictObject({
            maxItemsPerNode: whole(MAX_ITEMS_LIMIT).default(DEFAULT_LIMITS.maxItemsPerNode).describe('cap on `pubsub#max_items` (a node configured `max` keeps this many; a higher value is refused)'),
            maxNodesPerOwner: whole().default(DEFAULT_LIMITS.maxNodesPerOwner).describe('nodes one bare JID may own (admins exempt)'),
            publishRate: z
              .union([z.literal(false), z.strictObject({ perSecond: positive().default(RATE.perSecond), burst: whole().default(RATE.burst) })], must('must be false (no limit) or an object {"perSecond", "burst"}'))
              .default(RATE)
              .describe('`{"perSecond": r, "burst": b}`: publishes per sender (bare JID), a token bucket; `false`: no limit (admins and the component exempt)')
              .transform((rate) => (rate === false ? undefined : rate)),
          })
          .prefault({}),
        store: z
          .strictObject({
            sync: z.boolean(must('must be true or false')).default(false).describe('fsync every write: survives power loss, not only process crashes (LevelDB)'),
            backend: z.enum(['level', 'couchdb'], must('must be "level" or "couchdb"')).default('level').describe('`level` (embedded, in `dataDir/store`) or `couchdb`'),
            couchdb: z
              .strictObject({
                url: couchUrl().meta({ description: 'with `store.backend: "couchdb"`: the CouchDB server (may carry `user:password@`; never logged or shown)', default: 'required with `couchdb`' }),
                db: z.string(must(COUCH_DB)).regex(/^[a-z][a-z0-9_$()+/-]*$/, must(COUCH_DB)).default('hermod').describe('with `store.backend: "couchdb"`: the database (created if missing)'),
              })
              .optional(),
          })
          .superRefine((store, ctx) => {
            if (store.backend === 'couchdb' && store.couchdb === undefined) ctx.addIssue({ code: 'custom', path: ['couchdb'], message: 'missing (an object is required)' });
            if (store.backend !== 'couchdb' && store.couchdb !== undefined) ctx.addIssue({ code: 'custom', path: ['couchdb'], message: 'only used with store.backend "couchdb"' });
          }, whenObject)
          .prefault({})
          .transform(({ backend, sync, couchdb }) => (backend === 'couchdb' && couchdb ? { backend, sync, couchdb } : { backend: 'level' as const, sync })),
        transforms: z
          .strictObject({
            dir: filePath(baseDir).prefault('.').meta({ description: 'folder relative stylesheet paths resolve against (then the shipped `stylesheets/`)', default: "the config file's folder" }),
            timeoutMs: whole(undefined, 'must be a positive whole number').default(5_000).describe('time bound per transform, in milliseconds (the worker is stopped)'),
            maxOutput: whole(undefined, 'must be a positive whole number').default(8 * 1024 * 1024).describe('output bound per transform, in characters'),
          })
          .prefault({}),
        metrics: z
          .strictObject({
            port: z.number(must(PORT)).int(must(PORT)).min(1, must(PORT)).max(65535, must(PORT)).meta({ description: 'serve Prometheus metrics at `http://host:port/metrics`', default: 'off' }),
            host: text().default('127.0.0.1').describe('the address the metrics server listens on'),
          })
          .optional(),
        log: z.strictObject({ level: z.enum(LOG_LEVELS, must(`must be one of ${LOG_LEVELS.join(', ')}`)).default('info').describe(`${LOG_LEVELS.map((l) => `\`${l}\``).join(' ')} (\`--log-level\` overrides)`) }).prefault({}),
        midgard: midgardSchema(baseDir).optional(),
        cluster: z
          .strictObject({
            leaseSeconds: positive().default(4).describe('with `store.backend: "couchdb"` (several Hermods on one store): lifetime of the work lease and of each heartbeat, renewed every quarter of it; a dead process is replaced after about this long (a process that stalls longer is fenced: it exits)'),
          })
          .prefault({}),
      },
      must('the configuration must be a JSON object'),
    )
    .superRefine((config, ctx) => {
      if (config.component === undefined && config.appDb === undefined) ctx.addIssue({ code: 'custom', path: ['component'], message: 'missing (an object is required, unless appDb is set and its database has the hermod:credentials document)' });
    }, whenObject)
    .transform(({ component, appDb, midgard, metrics, pubsub, ...rest }) => ({
      ...rest,
      /** Absent only when appDb is given: then read from its hermod:credentials document. */
      component,
      appDb,
      /** Midgard replication (D-Bus/spool sources, inbound spool); absent: off. */
      midgard,
      /** Prometheus metrics over HTTP; absent: off. */
      metrics,
      /** creatorDomains undefined: the server the component is attached to. */
      pubsub: { ...pubsub, creatorDomains: pubsub.creatorDomains ?? (component ? [parentDomain(component.jid)] : undefined) },
    }));
}

const schemas = new Map<string, ReturnType<typeof buildSchema>>();

/** The config schema for files in `baseDir`, built once per folder (building takes milliseconds, parsing far less). */
export function configSchema(baseDir: string): ReturnType<typeof buildSchema> {
  let schema = schemas.get(baseDir);
  if (!schema) schemas.set(baseDir, (schema = buildSchema(baseDir)));
  return schema;
}

export type HermodConfig = z.output<ReturnType<typeof buildSchema>>;
export type AppDbConfig = NonNullable<HermodConfig['appDb']>;
export type AjatusConfig = HermodConfig['ajatus'];
/** url may carry credentials; never logged. */
export type StoreConfig = HermodConfig['store'];

/** Every documented key of the config file (README tables, `hermod --help`), in schema order. */
export const configKeys = (): KeyDoc[] => describedKeys(configSchema('.'));

/** Validates parsed JSON. `baseDir` resolves relative paths. Throws ConfigError listing every problem, one per line. */
export function validateConfig(raw: unknown, baseDir: string): HermodConfig {
  const r = check(configSchema(baseDir), raw);
  if (r.problems) throw new ConfigError(r.problems.join('\n'));
  const given = raw !== null && typeof raw === 'object' ? (raw as Record<string, unknown>) : {};
  const notes: string[] = [];
  if (given.ajatus !== undefined && given.appDb === undefined) notes.push('ajatus: ignored without appDb (Ajatus replication reads its partners, settings and content through the application database): add appDb, or remove the ajatus section');
  // Ajatus and Midgard share the component JID's subscriptions at partners' services: each
  // configures a shared one as it sets it up, so the last one to do so wins.
  const { ajatus, midgard } = r.value;
  if (r.value.appDb !== undefined && midgard !== undefined) {
    for (const key of ['notificationDigestMs', 'packedPayloads'] as const) {
      if (ajatus[key] !== midgard[key]) notes.push(`midgard.${key}: ${JSON.stringify(midgard[key])} differs from ajatus.${key} (${JSON.stringify(ajatus[key])}); the two replications share the component's subscriptions at partners' services, and a node both follow gets whichever set it up last: set both alike`);
    }
  }
  if (notes.length > 0) NOTES.set(r.value, notes);
  return r.value;
}

const NOTES = new WeakMap<HermodConfig, string[]>();

/**
 * What a valid config holds that has no effect (a section its feature cannot use without another),
 * as messages naming the key: `hermod check` prints them, `hermod start` logs them at warn.
 */
export function configNotes(config: HermodConfig): readonly string[] {
  return NOTES.get(config) ?? [];
}

/** "pubsub.example.org" -> "example.org" (a single-label JID is its own parent). */
export function parentDomain(domain: string): string {
  const dot = domain.indexOf('.');
  return dot === -1 || dot === domain.length - 1 ? domain : domain.slice(dot + 1);
}

export async function loadConfig(file: string): Promise<HermodConfig> {
  let source: string;
  try {
    source = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(source);
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
