// Which pub/sub nodes a Midgard object belongs to, and the topic tree that gives objects a path.
// Defaults: `/<Class>/all`, `/<Class>/approved` (approved objects only), `/sitegroup/<sg>/<Class>/all`
// (objects that carry a sitegroup), plus configured path nodes `{node, regexp}` matched against
// the object's path (`/site/news` for a topic, `/site/news/hello-world` for an article in it).
// Pure: no I/O; the index is filled by the caller from notifications and an export file.

import { Element, parse } from 'ltx';
import { isApproved, linkGuid, TOPIC, type MidgardObject } from '../codecs/midgard.ts';

export interface PathNode {
  node: string;
  regexp: RegExp;
}

export interface MidgardNodeMapping {
  /** Template with `{class}`, or false to turn the node off. */
  all: string | false;
  approved: string | false;
  /** Template with `{class}` and `{sitegroup}`. */
  sitegroup: string | false;
  paths: PathNode[];
}

export const DEFAULT_MAPPING: MidgardNodeMapping = {
  all: '/{class}/all',
  approved: '/{class}/approved',
  sitegroup: '/sitegroup/{sitegroup}/{class}/all',
  paths: [],
};

const fill = (template: string, obj: MidgardObject): string => template.replaceAll('{class}', obj.className).replaceAll('{sitegroup}', obj.sitegroup ?? '');

export interface TopicEntry {
  name: string;
  up: string | undefined;
}

/** GUID -> {name, up} of midgard_topic objects; paths are computed on demand. */
export class TopicIndex {
  private readonly topics = new Map<string, TopicEntry>();

  get size(): number {
    return this.topics.size;
  }

  set(guid: string, entry: TopicEntry): void {
    this.topics.set(guid.toLowerCase(), entry);
  }

  delete(guid: string): void {
    this.topics.delete(guid.toLowerCase());
  }

  get(guid: string): TopicEntry | undefined {
    return this.topics.get(guid.toLowerCase());
  }

  /** `/root/child/…` for a topic; undefined when a topic on the way up is unknown (or a cycle). */
  path(guid: string): string | undefined {
    const names: string[] = [];
    const seen = new Set<string>();
    for (let g: string | undefined = guid.toLowerCase(); g; g = this.topics.get(g)?.up) {
      const t = this.topics.get(g);
      if (!t || seen.has(g)) return undefined;
      seen.add(g);
      names.unshift(t.name);
    }
    return `/${names.join('/')}`;
  }

  /** Takes every midgard_topic found anywhere in an export file (one or many documents). */
  loadExport(text: string): number {
    const root = parse(text) as Element;
    let n = 0;
    const walk = (el: Element): void => {
      if (el.name === TOPIC && typeof el.attrs.guid === 'string') {
        this.set(el.attrs.guid, { name: el.getChildText('name') ?? '', up: linkGuid(el.getChildText('up') ?? undefined) });
        n++;
      }
      for (const c of el.getChildElements()) walk(c);
    };
    walk(root);
    return n;
  }
}

/** Index entry of a topic object. */
export const topicEntry = (obj: MidgardObject): TopicEntry => ({ name: obj.fields.name ?? '', up: linkGuid(obj.fields.up) });

/** The object's path in the topic tree: a topic's own, or its `topic` link's path plus its name. */
export function objectPath(obj: MidgardObject, index: TopicIndex): string | undefined {
  if (obj.className === TOPIC) return index.path(obj.guid);
  const topic = linkGuid(obj.fields.topic);
  if (!topic) return undefined;
  const base = index.path(topic);
  return base === undefined ? undefined : `${base}/${obj.fields.name || obj.guid}`; // an empty name too: no path ending in '/'
}

/** The nodes a (live) object is published to. */
export function nodesFor(obj: MidgardObject, mapping: MidgardNodeMapping, index: TopicIndex): string[] {
  const nodes: string[] = [];
  if (mapping.all) nodes.push(fill(mapping.all, obj));
  if (mapping.approved && isApproved(obj)) nodes.push(fill(mapping.approved, obj));
  if (mapping.sitegroup && obj.sitegroup) nodes.push(fill(mapping.sitegroup, obj));
  if (mapping.paths.length > 0) {
    const path = objectPath(obj, index);
    if (path !== undefined) for (const p of mapping.paths) if (p.regexp.test(path)) nodes.push(p.node);
  }
  return [...new Set(nodes)];
}
