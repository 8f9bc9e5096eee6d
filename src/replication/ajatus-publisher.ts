// Publishing side of Ajatus/CouchDB replication: each changed document goes to one node per tag
// (`/tags/<tag>`, created on first use with the tag's settings), as an Atom entry whose item id
// is the document id. A tag removed from a document retracts the item from that node; a deleted
// document (tombstone or the profile's deleted flag) is published as that revision, then
// retracted everywhere it was; a later revision that leaves it deleted goes the same way.
// Revisions imported from partners, and revisions already published, are not published again
// (no echoes, no duplicates after a restart).
// Tag settings (access model, whitelist) are applied to the nodes as they change.

import type { DocumentScope } from 'nano';
import { buildEntry, type CouchDoc, type DocCodec } from '../codecs/couch-doc.ts';
import type { Logger } from '../log.ts';
import { PubsubError } from '../pubsub/errors.ts';
import type { PubsubService } from '../pubsub/service.ts';
import type { Change } from '../sources/couchdb-changes.ts';
import { enclosure, Offloader, splitByBudget, type HttpUploader } from './http-upload.ts';
import { isDeleted, stringAt, tagsOf, type Profile } from './profile.ts';
import type { AppSettings, TagSettings } from './settings.ts';
import type { ReplicationState } from './state.ts';
import { applyNodeAccess, ensureNode } from './node-access.ts';

export const tagNode = (tag: string): string => `/tags/${tag}`;

const revNumber = (rev: string): number => Number.parseInt(rev, 10);

/** CouchDB's winner: live beats deleted, then the longer history, then the greater rev string. */
export function winningRevision(leaves: CouchDoc[]): CouchDoc | undefined {
  let best: CouchDoc | undefined;
  for (const leaf of leaves) {
    if (!best) {
      best = leaf;
      continue;
    }
    const a = [leaf._deleted === true ? 0 : 1, revNumber(leaf._rev)] as const;
    const b = [best._deleted === true ? 0 : 1, revNumber(best._rev)] as const;
    if (a[0] > b[0] || (a[0] === b[0] && (a[1] > b[1] || (a[1] === b[1] && leaf._rev > best._rev)))) best = leaf;
  }
  return best;
}
export const TAG_PREFIX = '/tags/';
/** Documents whose leaves are fetched ahead of the one being published. */
const LEAVES_AHEAD = 8;

export interface AjatusPublisherOptions {
  service: PubsubService;
  /** The component JID: the actor of every publish (an admin of the service). */
  actor: string;
  content: DocumentScope<unknown>;
  contentDbName: string;
  state: ReplicationState;
  settings: AppSettings;
  profile: Profile;
  codec: DocCodec;
  /** Largest attachment (bytes, decoded) carried inline; larger ones go through `uploader`. */
  inlineAttachmentMax: number;
  uploader?: HttpUploader;
  log: Logger;
  /** Called for each contact document seen (partners). */
  onContact?: (doc: CouchDoc) => void;
  /** Counts publishes, for tests and metrics. */
  onPublish?: (node: string, docId: string, rev: string) => void;
}

export class AjatusPublisher {
  private readonly o: AjatusPublisherOptions;
  published = 0;

  private readonly offloader: Offloader;

  constructor(options: AjatusPublisherOptions) {
    this.o = options;
    this.offloader = new Offloader(options.uploader, options.state, options.log, 'ajatus.inlineAttachmentMax');
  }

  async handle(changes: Change[]): Promise<void> {
    const todo = changes.filter((c) => !c.id.startsWith('_design/'));
    // Documents are handled one by one in feed order, but their leaves are fetched a few ahead:
    // one HTTP round trip to CouchDB per document was the bulk of the time, spent waiting.
    // (A fetch made a little early is no staler than before: a later edit is a later change.)
    const fetches: Array<Promise<CouchDoc[]>> = [];
    const fetch = (i: number): void => {
      const change = todo[i];
      if (!change || fetches[i]) return;
      const p = this.leaves(change.id);
      p.catch(() => {}); // handled (or dropped with the batch) by handleOne
      fetches[i] = p;
    };
    for (let i = 0; i < todo.length; i++) {
      for (let j = i; j < Math.min(todo.length, i + LEAVES_AHEAD); j++) fetch(j);
      await this.handleOne(todo[i] as Change, fetches[i] as Promise<CouchDoc[]>);
    }
  }

  /** Every leaf revision of a document (live and deleted), with history and attachments. */
  private async leaves(id: string): Promise<CouchDoc[]> {
    try {
      const res = (await this.o.content.get(id, { open_revs: 'all', revs: true, attachments: true } as never)) as unknown as Array<{ ok?: CouchDoc }>;
      return res.flatMap((r) => (r.ok ? [r.ok] : []));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return [];
      throw err;
    }
  }

  private async handleOne(change: Change, fetched: Promise<CouchDoc[]>): Promise<void> {
    const { state, log, profile } = this.o;
    const before = await state.nodesOf(change.id);
    const leaves = await fetched;
    const winner = winningRevision(leaves);
    if (!winner) {
      for (const node of before) await this.retract(node, change.id); // purged
      if (before.length > 0) await state.setNodesOf(change.id, []);
      return;
    }
    const deleted = winner._deleted === true || isDeleted(winner, profile);
    if (!deleted && stringAt(winner, profile.typePath) === profile.contactType) this.o.onContact?.(winner);
    const unknown = await state.unknownRevs(change.id, leaves.map((l) => l._rev));
    const nodes = deleted ? [] : tagsOf(winner, profile).map(tagNode);
    // A new revision of a document that stays deleted (a conflict resolved after the deletion, an
    // Ajatus-deleted note edited) goes where the deletion went, so partners keep the same leaves.
    const had = deleted && before.length === 0 && unknown.length > 0 ? await state.deletedFrom(change.id) : before;
    if (unknown.length > 0) {
      try {
        await this.offloadAttachments(leaves);
      } catch (err) {
        // Not checkpointed as published: the next change of the document tries again.
        log.error('document not published: a large attachment could not be uploaded', { doc: change.id, reason: String(err) });
        return;
      }
      // A deletion is published (as its tombstone) to the nodes that had the document, so
      // replicas get the same revision tree; the retraction below then notifies readers.
      const targets = deleted ? had : nodes;
      if (targets.length > 0) {
        const tags = targets.map((n) => n.slice(TAG_PREFIX.length));
        const entry = buildEntry(winner, this.entryMeta(winner, tags), this.o.codec, leaves.filter((l) => l !== winner));
        for (const [name, att] of Object.entries((winner._attachments ?? {}) as Record<string, { hermod_url?: string; hermod_sha256?: string; length?: number; content_type?: string }>)) {
          if (!att.hermod_url) continue; // an uploaded attachment, for feed readers: Atom enclosure + XEP-0300 hash
          entry.cnode(enclosure({ url: att.hermod_url, length: att.length ?? 0, sha256: att.hermod_sha256 ?? '', contentType: att.content_type ?? 'application/octet-stream' }, name));
        }
        const payload = entry.toString();
        for (const node of targets) {
          if (!deleted) await this.ensureNode(node.slice(TAG_PREFIX.length));
          try {
            await this.o.service.publish(this.o.actor, node, { item: { id: change.id, payload } });
          } catch (err) {
            // A refusal (e.g. payload-too-big) is final for this revision: log it and go on;
            // anything else (the store failing) is retried with the batch.
            if (!(err instanceof PubsubError) || err.condition === 'internal-server-error') throw err;
            log.error('document not published: the node refused it', { doc: change.id, node, condition: err.condition, reason: err.text });
            return;
          }
          this.published++;
          this.o.onPublish?.(node, change.id, winner._rev);
        }
        log.debug('published document', { doc: change.id, rev: winner._rev, leaves: leaves.length, nodes: targets, deleted });
      }
      await state.markRevs(change.id, unknown, 'p');
    }
    for (const node of had) if (!nodes.includes(node)) await this.retract(node, change.id);
    if (deleted && before.length > 0) await state.setDeletedFrom(change.id, before);
    if (JSON.stringify(before) !== JSON.stringify(nodes)) await state.setNodesOf(change.id, nodes);
  }

  /**
   * Keeps at most `inlineAttachmentMax` bytes of attachments inline over all leaves (smallest
   * first) and replaces the others by a reference to an XEP-0363 upload:
   * {content_type, length, hermod_url, hermod_sha256} — the sink fetches and verifies them.
   */
  private async offloadAttachments(leaves: CouchDoc[]): Promise<void> {
    type Att = { data?: string; content_type?: string; digest?: string };
    const all = leaves.flatMap((leaf) =>
      Object.entries((leaf._attachments ?? {}) as Record<string, Att>)
        .filter(([, att]) => typeof att.data === 'string')
        .map(([name, att]) => ({ leaf, name, att, size: Math.floor(((att.data as string).length * 3) / 4) })),
    );
    for (const a of splitByBudget(all, (x) => x.size, this.o.inlineAttachmentMax)) {
      const bytes = Buffer.from(a.att.data as string, 'base64');
      const contentType = a.att.content_type ?? 'application/octet-stream';
      const ref = await this.offloader.offload({ filename: `${a.leaf._id}-${a.name}`, bytes, contentType, ...(a.att.digest ? { key: a.att.digest } : {}), logFields: { doc: a.leaf._id, attachment: a.name } });
      (a.leaf._attachments as Record<string, unknown>)[a.name] = { content_type: contentType, length: ref.length, hermod_url: ref.url, hermod_sha256: ref.sha256 };
    }
  }

  private entryMeta(doc: CouchDoc, tags: string[]): { id: string; title: string; updated: string; author: string; tags: string[] } {
    const p = this.o.profile;
    const updated = stringAt(doc, p.updatedPath);
    return {
      id: `urn:hermod:couchdb:${encodeURIComponent(this.o.contentDbName)}:${encodeURIComponent(doc._id)}`,
      title: stringAt(doc, p.titlePath) ?? doc._id,
      updated: updated && !Number.isNaN(Date.parse(updated)) ? new Date(updated).toISOString() : new Date().toISOString(),
      author: stringAt(doc, p.authorPath) ?? 'unknown',
      tags,
    };
  }

  private async retract(node: string, docId: string): Promise<void> {
    try {
      await this.o.service.retract(this.o.actor, node, [docId], true);
    } catch (err) {
      if (err instanceof PubsubError && err.condition === 'item-not-found') return; // already gone
      throw err;
    }
  }

  /** Creates the node for a tag on first use, with the tag's settings. */
  private async ensureNode(tag: string): Promise<void> {
    const settings = this.o.settings.tag(tag);
    if (await ensureNode(this.o.service, this.o.actor, tagNode(tag), settings, `Documents tagged ${tag}`)) await this.applyTagSettings(tag, settings);
  }

  /** Makes a tag node's access model and member list match its settings document. */
  async applyTagSettings(tag: string, settings: TagSettings): Promise<void> {
    const changed = await applyNodeAccess(this.o.service, this.o.actor, tagNode(tag), settings); // no node yet: created on first publish
    if (changed) this.o.log.info('tag whitelist applied', { tag, ...changed });
  }
}
