// Where the replication-relevant fields live in an application's documents. `ajatus` is the
// default (Ajatus wraps every field as {val: …} under `value`); a generic CouchDB database is
// replicated by configuring the paths (dotted, e.g. "meta.tags").

import type { CouchDoc, Json } from '../codecs/couch-doc.ts';

export interface Profile {
  typePath: string;
  tagsPath: string;
  deletedPath: string;
  titlePath: string;
  authorPath: string;
  updatedPath: string;
  /** Documents of this type are contacts (replication partners when they carry a JID). */
  contactType: string;
  jidPath: string;
}

export const PROFILES: Record<string, Profile> = {
  ajatus: {
    typePath: 'value._type',
    tagsPath: 'value.tags.val',
    deletedPath: 'value.metadata.deleted.val',
    titlePath: 'value.title.val',
    authorPath: 'value.metadata.creator.val',
    updatedPath: 'value.metadata.revised.val',
    contactType: 'contact',
    jidPath: 'value.jid.val',
  },
  plain: {
    typePath: 'type',
    tagsPath: 'tags',
    deletedPath: 'deleted',
    titlePath: 'title',
    authorPath: 'author',
    updatedPath: 'updated',
    contactType: 'contact',
    jidPath: 'jid',
  },
};

export function pick(doc: CouchDoc, path: string): Json | undefined {
  let value: Json | undefined = doc;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
    value = (value as { [k: string]: Json })[part];
  }
  return value;
}

/** Tags of a document: strings only, trimmed, de-duplicated; safe as node id segments. */
export function tagsOf(doc: CouchDoc, profile: Profile): string[] {
  const raw = pick(doc, profile.tagsPath);
  if (!Array.isArray(raw)) return [];
  const tags = raw.filter((t): t is string => typeof t === 'string').map((t) => t.trim()).filter((t) => t.length > 0 && t.length <= 200 && !t.includes('/'));
  return [...new Set(tags)];
}

export const isDeleted = (doc: CouchDoc, profile: Profile): boolean => doc._deleted === true || pick(doc, profile.deletedPath) === true;

export const stringAt = (doc: CouchDoc, path: string): string | undefined => {
  const v = pick(doc, path);
  return typeof v === 'string' && v.length > 0 ? v : undefined;
};
