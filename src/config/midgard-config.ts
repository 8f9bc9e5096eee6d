// The `midgard` section of the config file (Midgard replication): its part of the one config
// schema. Every problem is one message naming the key, e.g. `midgard.nodes.paths[0].regexp: …`.
// Relative paths are resolved against the config file's folder. Access settings per node are the
// Midgard adapter of the same per-node access mechanism Ajatus reads from ajatus_db.

import { z } from 'zod';
import { normalizeJid } from '../xmpp/jid.ts';
import { bareJid, check, digestMs, filePath, must, nodeMap, parsed, positive, text } from './schema-kit.ts';
import { transformSchema, type TransformSpec } from './transform-spec.ts';

function regexpError(source: string): string | undefined {
  try {
    new RegExp(source);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A regular expression's source text. */
const regexp = () =>
  text('must be a non-empty regular expression').superRefine((re, ctx) => {
    const error = regexpError(re);
    if (error) ctx.addIssue({ code: 'custom', input: re, message: `not a valid regular expression: ${error}` });
  });

const template = z.custom<string | false>((v) => v === false || (typeof v === 'string' && v.startsWith('/') && v.includes('{class}')), must('must be false or a node template starting with "/" and containing {class}'));

const isBus = (bus: string): boolean => ['system', 'session', 'none'].includes(bus) || /^[a-z]+:[^\s]*=/.test(bus);

const accessSettings = z
  .strictObject(
    {
      access_model: z.enum(['whitelist', 'open'], must('must be "whitelist" or "open"')).default('whitelist'),
      whitelist: z.array(bareJid('must be a bare JID'), must('must be an array of bare JIDs')).default([]),
      title: z.string(must('must be a string')).optional(),
    },
    must('must be an object {"access_model", "whitelist", "title"}'),
  )
  .transform(({ access_model, whitelist, title }) => ({ accessModel: access_model, whitelist, ...(title === undefined ? {} : { title }) }));

export type MidgardAccessConfig = z.output<typeof accessSettings>;

const jid = parsed('must be a JID', normalizeJid);

/** A partner: its JID, or {"jid", "follow": nodes to follow instead of midgard.follow, "transform": stylesheets}. */
const partner = z.union(
  [jid, z.strictObject({ jid, follow: z.array(text('must be a node id'), must('must be an array of node ids')).optional(), transform: transformSchema.optional() })],
  must('must be a JID or {"jid", "follow", "transform"}'),
);

type PartnerSettings = { follow?: string[]; transform?: Record<string, TransformSpec> };

const partnerJid = z
  .strictObject(
    {
      property: text().optional(),
      parameter: text()
        .regex(/^[^/]+\/[^/]+$/, must('must be "domain/name" such as "org.openpsa.contacts/jid"'))
        .transform((p) => {
          const [domain, name] = p.split('/') as [string, string];
          return { domain, name };
        })
        .optional(),
    },
    must('must be an object {"property", "parameter"}'),
  )
  .refine((pj) => pj.property !== undefined || pj.parameter !== undefined, { error: 'give "property", "parameter" or both' })
  .prefault({ property: 'jid' })
  .transform(({ property, parameter }) => ({ property, parameter }));

/** The `midgard` section, paths resolved against `baseDir`. One line per key: schema, default, meaning (README "Midgard replication"). */
export function midgardSchema(baseDir: string) {
  return z
    .strictObject({
      bus: text().refine(isBus, must('must be "system", "session", "none" or a D-Bus address such as "unix:path=/run/dbus/system_bus_socket"')).default('system').describe('D-Bus to listen on: `system`, `session`, an address (`unix:path=…`), or `none`'),
      spool: filePath(baseDir).optional().meta({ description: 'a directory of serialized objects to publish (the D-Bus alternative)', default: 'off' }),
      inbound: filePath(baseDir).prefault('./midgard-inbound').describe("where partners' objects are written for the importer"),
      topicsExport: filePath(baseDir).optional().describe('an export file with `midgard_topic` objects: the topic tree for paths at start'),
      nodes: z
        .strictObject({
          all: template.default('/{class}/all').describe('node template every object goes to (`{class}`: its class), or `false`'),
          approved: template.default('/{class}/approved').describe('node template approved objects go to, or `false`'),
          sitegroup: template.default('/sitegroup/{sitegroup}/{class}/all').describe('node template objects of a Midgard 1.x sitegroup go to (`{sitegroup}`), or `false`'),
          paths: z
            .array(z.strictObject({ node: text('must be a node id starting with "/"').startsWith('/', must('must be a node id starting with "/"')), regexp: regexp() }, must('must be an object {"node", "regexp"}')), must('must be an array of {"node", "regexp"}'))
            .default([])
            .describe('`[{"node": "/x", "regexp": "…"}]`: objects whose path matches go to that node too'),
        })
        .prefault({}),
      access: nodeMap(
        z.string().refine((node) => node === '*' || node.startsWith('/'), { error: 'keys must be node ids starting with "/" or "*"' }),
        accessSettings,
        'must be an object mapping node ids (or "*") to access settings',
      )
        .default({})
        .meta({ description: 'node id (or `"*"`) → `{"access_model": "whitelist" | "open", "whitelist": [JIDs], "title"}`', default: 'whitelist, empty' }),
      partners: z.array(partner, must('must be an array of JIDs or {"jid", "follow", "transform"}')).default([]).describe('partner JIDs known from the start (more come from `midgard_person` objects); `{"jid", "follow", "transform"}` for per-partner nodes and stylesheets'),
      follow: z
        .array(regexp(), must('must be an array of regular expressions on node ids'))
        .default(['^/(?!tags/)[^/]+/all$'])
        .meta({ description: 'which partner nodes to subscribe to (regular expressions on node ids)', default: '`["^/(?!tags/)[^/]+/all$"]` (every class\'s `/all` node, not Ajatus\'s `/tags/all`)' }),
      partnerJid: partnerJid.describe('where a `midgard_person` carries a JID: `{"property": "jid", "parameter": "domain/name"}`'),
      discoveryIntervalSeconds: positive().default(300).describe('how often partners are re-discovered (as for Ajatus: failed attempts are retried from 2 s, announced nodes followed at once)'),
      inlineBlobMax: positive().default(128 * 1024).describe('blob bytes carried inline per document (smallest first); the rest go through XEP-0363 upload'),
      notificationDigestMs: digestMs().default(25).describe('notification digests asked of partners, in ms, as `ajatus.notificationDigestMs` (the component JID\'s subscriptions are shared with Ajatus: set both alike); 0: one notification per item'),
      packedPayloads: z.boolean(must('must be true or false')).default(true).describe('packed payloads asked of partners, as `ajatus.packedPayloads` (the component JID\'s subscriptions are shared with Ajatus: set both alike)'),
      liveBacklogItems: positive().default(2000).describe('partners\' items received live and not yet written before further notifications of a node are read back from its history instead, as `ajatus.liveBacklogItems`'),
    })
    .transform(({ partners, spool, topicsExport, ...section }) => ({
      ...section,
      spool,
      topicsExport,
      partners: partners.map((p) => (typeof p === 'string' ? p : p.jid)),
      partnerSettings: Object.fromEntries(
        partners.flatMap((p): Array<[string, PartnerSettings]> => (typeof p === 'string' ? [] : [[p.jid, { ...(p.follow ? { follow: p.follow } : {}), ...(p.transform ? { transform: p.transform } : {}) }]])),
      ),
    }));
}

export type MidgardConfig = z.output<ReturnType<typeof midgardSchema>>;

/** Validates `raw` (the value of the `midgard` key), pushing one message per problem onto `errors`. */
export function readMidgardConfig(raw: unknown, baseDir: string, errors: string[]): MidgardConfig | undefined {
  if (raw === undefined) return undefined;
  const r = check(midgardSchema(baseDir), raw, 'midgard');
  errors.push(...(r.problems ?? []));
  return r.value;
}
