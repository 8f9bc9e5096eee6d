// The `midgard` section of the config file (Midgard replication), validated like the rest of the
// file: every problem is one message naming the key, e.g. `midgard.nodes.paths[0].regexp: …`.
// Relative paths are resolved against the config file's folder. Access settings per node are the
// Midgard adapter of the same per-node access mechanism Ajatus reads from ajatus_db.

import path from 'node:path';
import { normalizeJid } from '../xmpp/jid.ts';
import { parseTransform, type TransformSpec } from './transform-spec.ts';

export interface MidgardAccessConfig {
  accessModel: 'whitelist' | 'open';
  whitelist: string[];
  title?: string;
}

export interface MidgardConfig {
  /** `system`, `session`, a D-Bus address, or `none` (no D-Bus). */
  bus: string;
  /** Spool directory of serialized objects to publish (the D-Bus alternative); absent: off. */
  spool: string | undefined;
  /** Inbound spool: partners' objects for Midgard's importer. */
  inbound: string;
  /** Optional export file with the topic tree (midgard_topic objects). */
  topicsExport: string | undefined;
  nodes: {
    all: string | false;
    approved: string | false;
    sitegroup: string | false;
    paths: Array<{ node: string; regexp: string }>;
  };
  /** Node id (or "*" for every other node) -> access settings. */
  access: Record<string, MidgardAccessConfig>;
  partners: string[];
  /** Per-partner settings from object entries of `partners`: nodes to follow (instead of `follow`), stylesheets. */
  partnerSettings: Record<string, { follow?: string[]; transform?: Record<string, TransformSpec> }>;
  /** Partner nodes to follow: regular expressions on node ids. */
  follow: string[];
  partnerJid: { property: string | undefined; parameter: { domain: string; name: string } | undefined };
  discoveryIntervalSeconds: number;
  /** Blob bytes carried inline per document (smallest first); larger ones go through XEP-0363 upload. */
  inlineBlobMax: number;
}

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: Json): string => (typeof v === 'string' ? `"${v}"` : JSON.stringify(v) ?? String(v));
const P = 'midgard.';

const KEYS = ['bus', 'spool', 'inbound', 'topicsExport', 'nodes', 'access', 'partners', 'follow', 'partnerJid', 'discoveryIntervalSeconds', 'inlineBlobMax'];

function regexpError(source: string): string | undefined {
  try {
    new RegExp(source);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Validates `raw` (the value of the `midgard` key), pushing one message per problem onto `errors`. */
export function readMidgardConfig(raw: Json, baseDir: string, errors: string[]): MidgardConfig | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) {
    errors.push(`midgard: must be an object, got ${show(raw)}`);
    return undefined;
  }
  for (const key of Object.keys(raw)) if (!KEYS.includes(key)) errors.push(`${P}${key}: unknown key (known: ${KEYS.join(', ')})`);
  const str = (obj: Record<string, Json>, key: string, prefix: string): string | undefined => {
    const v = obj[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length === 0) {
      errors.push(`${prefix}${key}: must be a non-empty string, got ${show(v)}`);
      return undefined;
    }
    return v;
  };
  const dir = (key: string): string | undefined => {
    const v = str(raw, key, P);
    return v === undefined ? undefined : path.resolve(baseDir, v);
  };

  const bus = str(raw, 'bus', P) ?? 'system';
  if (!['system', 'session', 'none'].includes(bus) && !/^[a-z]+:[^\s]*=/.test(bus)) errors.push(`${P}bus: must be "system", "session", "none" or a D-Bus address such as "unix:path=/run/dbus/system_bus_socket", got ${show(bus)}`);

  const nodesRaw = raw.nodes ?? {};
  const nodes: MidgardConfig['nodes'] = { all: '/{class}/all', approved: '/{class}/approved', sitegroup: '/sitegroup/{sitegroup}/{class}/all', paths: [] };
  if (!isObject(nodesRaw)) errors.push(`${P}nodes: must be an object, got ${show(nodesRaw)}`);
  else {
    for (const key of Object.keys(nodesRaw)) if (!['all', 'approved', 'sitegroup', 'paths'].includes(key)) errors.push(`${P}nodes.${key}: unknown key (known: all, approved, sitegroup, paths)`);
    for (const key of ['all', 'approved', 'sitegroup'] as const) {
      const v = nodesRaw[key];
      if (v === undefined) continue;
      if (v === false) nodes[key] = false;
      else if (typeof v === 'string' && v.startsWith('/') && v.includes('{class}')) nodes[key] = v;
      else errors.push(`${P}nodes.${key}: must be false or a node template starting with "/" and containing {class}, got ${show(v)}`);
    }
    const paths = nodesRaw.paths ?? [];
    if (!Array.isArray(paths)) errors.push(`${P}nodes.paths: must be an array of {"node", "regexp"}, got ${show(paths)}`);
    else
      paths.forEach((p: Json, i) => {
        const where = `${P}nodes.paths[${i}]`;
        if (!isObject(p)) return void errors.push(`${where}: must be an object {"node", "regexp"}, got ${show(p)}`);
        for (const key of Object.keys(p)) if (key !== 'node' && key !== 'regexp') errors.push(`${where}.${key}: unknown key (known: node, regexp)`);
        const node = p.node;
        const re = p.regexp;
        if (typeof node !== 'string' || !node.startsWith('/')) errors.push(`${where}.node: must be a node id starting with "/", got ${show(node)}`);
        if (typeof re !== 'string' || re.length === 0) errors.push(`${where}.regexp: must be a non-empty regular expression, got ${show(re)}`);
        else if (regexpError(re)) errors.push(`${where}.regexp: not a valid regular expression: ${regexpError(re)}`);
        if (typeof node === 'string' && node.startsWith('/') && typeof re === 'string' && !regexpError(re)) nodes.paths.push({ node, regexp: re });
      });
  }

  const access: Record<string, MidgardAccessConfig> = {};
  const accessRaw = raw.access ?? {};
  if (!isObject(accessRaw)) errors.push(`${P}access: must be an object mapping node ids (or "*") to access settings, got ${show(accessRaw)}`);
  else
    for (const [node, v] of Object.entries(accessRaw)) {
      const where = `${P}access["${node}"]`;
      if (node !== '*' && !node.startsWith('/')) errors.push(`${where}: keys must be node ids starting with "/" or "*"`);
      if (!isObject(v)) {
        errors.push(`${where}: must be an object {"access_model", "whitelist", "title"}, got ${show(v)}`);
        continue;
      }
      for (const key of Object.keys(v)) if (!['access_model', 'whitelist', 'title'].includes(key)) errors.push(`${where}.${key}: unknown key (known: access_model, whitelist, title)`);
      const model = v.access_model ?? 'whitelist';
      if (model !== 'whitelist' && model !== 'open') errors.push(`${where}.access_model: must be "whitelist" or "open", got ${show(model)}`);
      const list = v.whitelist ?? [];
      const whitelist: string[] = [];
      if (!Array.isArray(list)) errors.push(`${where}.whitelist: must be an array of bare JIDs, got ${show(list)}`);
      else
        list.forEach((j: Json, i) => {
          const jid = typeof j === 'string' ? normalizeJid(j) : undefined;
          if (!jid || jid.includes('/')) errors.push(`${where}.whitelist[${i}]: must be a bare JID, got ${show(j)}`);
          else whitelist.push(jid);
        });
      if (v.title !== undefined && typeof v.title !== 'string') errors.push(`${where}.title: must be a string, got ${show(v.title)}`);
      access[node] = { accessModel: model === 'open' ? 'open' : 'whitelist', whitelist, ...(typeof v.title === 'string' ? { title: v.title } : {}) };
    }

  const partners: string[] = [];
  const partnerSettings: MidgardConfig['partnerSettings'] = {};
  const partnersRaw = raw.partners ?? [];
  if (!Array.isArray(partnersRaw)) errors.push(`${P}partners: must be an array of JIDs or {"jid", "follow", "transform"}, got ${show(partnersRaw)}`);
  else
    partnersRaw.forEach((p: Json, i) => {
      const where = `${P}partners[${i}]`;
      const entry = isObject(p) ? p : { jid: p };
      for (const key of Object.keys(entry)) if (!['jid', 'follow', 'transform'].includes(key)) errors.push(`${where}.${key}: unknown key (known: jid, follow, transform)`);
      const jid = typeof entry.jid === 'string' ? normalizeJid(entry.jid) : undefined;
      if (!jid) return void errors.push(`${where}${isObject(p) ? '.jid' : ''}: must be a JID, got ${show(entry.jid)}`);
      partners.push(jid);
      if (!isObject(p)) return;
      const follow = entry.follow;
      if (follow !== undefined && !(Array.isArray(follow) && follow.every((n) => typeof n === 'string' && n.length > 0))) errors.push(`${where}.follow: must be an array of node ids, got ${show(follow)}`);
      let transform;
      try {
        transform = entry.transform === undefined ? undefined : parseTransform(entry.transform, `${where}.transform`);
      } catch (err) {
        errors.push((err as Error).message);
      }
      partnerSettings[jid] = { ...(Array.isArray(follow) ? { follow: follow as string[] } : {}), ...(transform ? { transform } : {}) };
    });

  const followRaw = raw.follow ?? ['^/(?!tags/)[^/]+/all$']; // every class's /all node, not Ajatus's /tags/all
  const follow: string[] = [];
  if (!Array.isArray(followRaw)) errors.push(`${P}follow: must be an array of regular expressions on node ids, got ${show(followRaw)}`);
  else
    followRaw.forEach((re: Json, i) => {
      if (typeof re !== 'string' || regexpError(re)) errors.push(`${P}follow[${i}]: must be a valid regular expression${typeof re === 'string' ? `: ${regexpError(re)}` : `, got ${show(re)}`}`);
      else follow.push(re);
    });

  const pjRaw = raw.partnerJid ?? { property: 'jid' };
  let partnerJid: MidgardConfig['partnerJid'] = { property: 'jid', parameter: undefined };
  if (!isObject(pjRaw)) errors.push(`${P}partnerJid: must be an object {"property", "parameter"}, got ${show(pjRaw)}`);
  else {
    for (const key of Object.keys(pjRaw)) if (key !== 'property' && key !== 'parameter') errors.push(`${P}partnerJid.${key}: unknown key (known: property, parameter)`);
    const property = str(pjRaw, 'property', `${P}partnerJid.`);
    const parameter = str(pjRaw, 'parameter', `${P}partnerJid.`);
    const m = parameter === undefined ? undefined : /^([^/]+)\/([^/]+)$/.exec(parameter);
    if (parameter !== undefined && !m) errors.push(`${P}partnerJid.parameter: must be "domain/name" such as "org.openpsa.contacts/jid", got ${show(parameter)}`);
    if (property === undefined && parameter === undefined) errors.push(`${P}partnerJid: give "property", "parameter" or both`);
    partnerJid = { property, parameter: m ? { domain: m[1] as string, name: m[2] as string } : undefined };
  }

  const interval = raw.discoveryIntervalSeconds ?? 300;
  if (typeof interval !== 'number' || !(interval > 0)) errors.push(`${P}discoveryIntervalSeconds: must be a positive number, got ${show(interval)}`);
  const inlineBlobMax = raw.inlineBlobMax ?? 128 * 1024; // as ajatus.inlineAttachmentMax
  if (typeof inlineBlobMax !== 'number' || !(inlineBlobMax > 0)) errors.push(`${P}inlineBlobMax: must be a positive number, got ${show(inlineBlobMax)}`);

  return {
    bus,
    spool: dir('spool'),
    inbound: dir('inbound') ?? path.resolve(baseDir, './midgard-inbound'),
    topicsExport: dir('topicsExport'),
    nodes,
    access,
    partners,
    partnerSettings,
    follow,
    partnerJid,
    discoveryIntervalSeconds: typeof interval === 'number' && interval > 0 ? interval : 300,
    inlineBlobMax: typeof inlineBlobMax === 'number' && inlineBlobMax > 0 ? inlineBlobMax : 128 * 1024,
  };
}
