// Node creation on first use and access settings (access model + whitelist of members) applied to
// a replication node — one mechanism with two adapters for where the settings live: ajatus_db
// documents (`hermod:tag:<tag>`, Ajatus) or the config file's `midgard.access` (Midgard). This
// module only makes a node match the settings it is given; callers log what changed.

import { PubsubError } from '../pubsub/errors.ts';
import type { ReplicationService } from './replication.ts';
import type { TagSettings } from './settings.ts';

export type NodeAccess = TagSettings;

/**
 * Largest item on a replication node: whole documents travel as items, so above the pub/sub
 * default (64 KiB); below the servers' default s2s stanza limits (Prosody 512 KiB).
 */
export const REPLICATION_MAX_PAYLOAD = 480 * 1024;

/** Creates the node (Atom payloads) unless it exists; true when it had to be created. */
export async function ensureNode(service: ReplicationService, actor: string, node: string, access: NodeAccess, title: string): Promise<boolean> {
  try {
    await service.metadata(node);
    return false;
  } catch (err) {
    if (!(err instanceof PubsubError && err.condition === 'item-not-found')) throw err;
  }
  try {
    await service.create(actor, node, { accessModel: access.accessModel, title: access.title ?? title, type: 'http://www.w3.org/2005/Atom', maxPayloadSize: REPLICATION_MAX_PAYLOAD });
  } catch (err) {
    if (!(err instanceof PubsubError && err.condition === 'conflict')) throw err;
  }
  return true;
}

/**
 * Makes an existing node's access model, title and member list match the settings. Returns the
 * JIDs added to and removed from the whitelist when it changed; undefined when the node does not
 * exist (yet) or nothing changed in the list.
 */
export async function applyNodeAccess(service: ReplicationService, actor: string, node: string, access: NodeAccess): Promise<{ added: string[]; removed: string[] } | undefined> {
  let current: Map<string, string>;
  try {
    current = await service.getAffiliations(actor, node);
  } catch (err) {
    if (err instanceof PubsubError && err.condition === 'item-not-found') return undefined;
    throw err;
  }
  const config = await service.getConfig(actor, node);
  if (config.accessModel !== access.accessModel || (access.title && config.title !== access.title)) {
    await service.configure(actor, node, { accessModel: access.accessModel, ...(access.title ? { title: access.title } : {}) });
  }
  const wanted = new Set(access.whitelist);
  const changes: Array<{ jid: string; affiliation: 'member' | 'none' }> = [];
  for (const jid of wanted) if (!current.has(jid)) changes.push({ jid, affiliation: 'member' });
  for (const [jid, affiliation] of current) if (affiliation === 'member' && !wanted.has(jid)) changes.push({ jid, affiliation: 'none' });
  if (changes.length === 0) return undefined;
  await service.setAffiliations(actor, node, changes);
  return { added: changes.filter((c) => c.affiliation === 'member').map((c) => c.jid), removed: changes.filter((c) => c.affiliation === 'none').map((c) => c.jid) };
}
