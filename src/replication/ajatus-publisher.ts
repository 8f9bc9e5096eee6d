// Publishing side of Ajatus/CouchDB replication: each changed document goes to one node per tag
// (`/tags/<tag>`, created on first use with the tag's settings), as an Atom entry whose item id
// is the document id. A tag removed from a document retracts the item from that node; a deleted
// document (tombstone or the profile's deleted flag) is published as that revision, then
// retracted everywhere it was; a later revision that leaves it deleted goes the same way.
// Revisions imported from partners, and revisions already published, are not published again
// (no echoes, no duplicates after a restart).
// Tag settings (access model, whitelist) are applied to the nodes as they change.

import type { DocumentScope } from 'nano';
import { LRUCache } from 'lru-cache';
import { buildEntry, type CouchDoc, type DocCodec } from '../codecs/couch-doc.ts';
import type { Logger } from '../log.ts';
import { PubsubError } from '../pubsub/errors.ts';
import type { ReplicationService } from './replication.ts';
import { bulkGetRevisions, type Change } from '../sources/couchdb-changes.ts';
import { enclosure, Offloader, splitByBudget, UploadRefused, type HttpUploader } from './http-upload.ts';
import { isDeleted, stringAt, tagsOf, type Profile } from './profile.ts';
import type { AppSettings, TagSettings } from './settings.ts';
import { publishChunk, publishEntries, runBatched, type BatchedJob, type PipelineStep } from './pipeline.ts';
import type { ReplicationState, RevKind, StateBatch } from './state.ts';
import { applyNodeAccess, ensureNode } from './node-access.ts';
import type { PublishRetries } from './publish-retries.ts';
import { KeyedMutex } from '../util/mutex.ts';

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

/** One document's entry for one node (published with the other entries of the batch for that node). */
interface Publication {
  docId: string;
  rev: string;
  payload: string;
  /** On the document's last node: what the debug log says once it is published. */
  last?: { leaves: number; nodes: string[]; deleted: boolean };
}

/** What publishing one change takes (AjatusPublisher.plan). */
interface DocPlan {
  docId: string;
  /** Its publications (batched per node), then its retractions (pipeline.ts). */
  job: BatchedJob<Publication>;
  /** Recorded once every step completed. */
  state: StateBatch;
}

/** One PubsubService.publishMany call takes at most 250 entries / 4 MiB of a batch (pipeline.ts). */
const PUBLISH_CHUNK = publishChunk<Publication>((p) => p.payload);

/** Attachment bytes (decoded, as the stubs say) one slice of a batch reads and publishes at once (handle). */
const SLICE_BYTES = 16 * 1024 * 1024;

/** Most changes read ahead and not yet handed over (more: a stop left them; dropped). */
const AHEAD_MAX = 2000;

/** A change by document and leaf revisions: what was read ahead for it is what it needs. */
const changeKey = (c: Change): string => `${c.id}\0${c.revs.join('\0')}`;

/** Whether every attachment of a revision carries its bytes (not a stub). */
const hasBodies = (doc: CouchDoc): boolean => Object.values((doc._attachments ?? {}) as Record<string, { data?: unknown }>).every((a) => typeof a.data === 'string');

export interface AjatusPublisherOptions {
  service: ReplicationService;
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
  /** What the sink noted of the leaves it wrote (imported documents are then not read back). */
  imports?: ImportNotes;
  /** Attachment bytes one slice of a batch reads and publishes at once (default SLICE_BYTES, 16 MiB). */
  sliceBytes?: number;
  /** Where a document whose large attachment could not be uploaded waits to be published again (publish-retries.ts; handed back through retry()); without it, it waits for its next edit. */
  retries?: Pick<PublishRetries<Change>, 'failed' | 'succeeded' | 'holds'>;
}

/** A document not published this time for a reason that may pass (plan): it is tried again (PublishRetries). */
interface Retry {
  retry: string;
}

/** A read ahead that failed: read again (readLeaves). */
const noDocs = (): undefined => undefined;

export class AjatusPublisher {
  private readonly o: AjatusPublisherOptions;
  published = 0;

  private readonly offloader: Offloader;
  /** Leaves read ahead (prefetch), by change (id and leaf revisions). */
  private readonly ahead = new Map<string, Promise<CouchDoc[] | undefined>>();
  /** One batch at a time (the change feed and the retries): a document is never handled twice at once. */
  private readonly serial = new KeyedMutex();

  constructor(options: AjatusPublisherOptions) {
    this.o = options;
    this.offloader = new Offloader(options.uploader, options.state, options.log, 'ajatus.inlineAttachmentMax');
  }

  /**
   * Publishes a batch of changes (feed order; each document once, as the feed gives it): changes
   * whose every leaf revision this site published itself are skipped without reading CouchDB; the
   * others' leaves are read with one `_bulk_get` (bulkGetRevisions; attachment bodies in a second
   * one for the documents that have some and fit the inline budget, larger ones one by one as
   * before), published pipelined (pipeline.ts) and the state of the whole batch written in ONE
   * store write once their publishes completed. Rejects (after recording what completed) when a
   * publish failed other than by a final refusal (e.g. the store): the source hands the batch
   * over again. A document whose large attachment could not be uploaded is recorded in
   * `retries` (with the batch's state) and handed over again later. Batches are handled one at
   * a time, in call order.
   */
  handle(changes: Change[]): Promise<void> {
    return this.serial.run('', () => this.handleNow(changes));
  }

  private async handleNow(changes: Change[]): Promise<void> {
    const { state, retries } = this.o;
    // Loops, not filter()/map() callbacks, on this path that runs for every change: see
    // src/util/hot-loops.md.
    const todo: Change[] = [];
    for (const c of changes) if (!c.id.startsWith('_design/')) todo.push(c);
    if (todo.length === 0) return;
    // Read ahead for changes skipped below (published, noted imports) is not needed: dropped
    // here; readLeaves takes (and drops) those it uses.
    const early = new Map<string, Promise<CouchDoc[] | undefined>>();
    for (const c of todo) {
      const read = this.ahead.get(changeKey(c));
      if (read) {
        early.set(changeKey(c), read);
        this.ahead.delete(changeKey(c));
      }
    }
    const kinds = await state.revKindsMany(todo);
    const batch = state.batch();
    // Every leaf published by us: handled already (a replayed batch, our own publish seen again).
    const openAt: number[] = [];
    for (let i = 0; i < todo.length; i++) {
      const revs = kinds[i] as RevKind[];
      let allOurs = (todo[i] as Change).revs.length > 0;
      for (const k of revs) if (k !== 'p') allOurs = false;
      if (!allOurs) openAt.push(i);
      else retries?.succeeded(batch, (todo[i] as Change).id);
    }
    if (openAt.length === 0) return state.commit(batch);
    // Leaves all known, some imported, as the sink noted them when it wrote them: not read either.
    const noted = new Map<string, ImportNote>();
    for (const i of openAt) {
      const change = todo[i] as Change;
      const note = (kinds[i] as RevKind[]).includes(undefined) ? undefined : this.o.imports?.usable(change);
      if (note) noted.set(change.id, note);
    }
    const open: Change[] = [];
    const openKinds: RevKind[][] = [];
    const openIds: string[] = [];
    for (const i of openAt) {
      open.push(todo[i] as Change);
      openKinds.push(kinds[i] as RevKind[]);
      openIds.push((todo[i] as Change).id);
    }
    const befores = await state.nodesOfMany(openIds);
    const ensured = new Set<string>();
    let failure: unknown;
    // In slices (feed order) of at most SLICE_BYTES of attachments read: read, planned,
    // published and let go one after the other, so a batch of large documents is never all in
    // memory at once; the state of the whole batch is still one write.
    for (let from = 0; from < open.length && failure === undefined; ) {
      const toRead: number[] = [];
      const toReadChanges: Change[] = [];
      const toReadKinds: RevKind[][] = [];
      for (let i = from; i < open.length; i++) {
        if (noted.has((open[i] as Change).id)) continue;
        toRead.push(i);
        toReadChanges.push(open[i] as Change);
        toReadKinds.push(openKinds[i] as RevKind[]);
      }
      const read = await this.readLeaves(toReadChanges, toReadKinds, early);
      const to = read.until < toRead.length ? (toRead[read.until] as number) : open.length;
      for (const i of toRead.slice(read.until)) {
        const stubs = read.leaves.get((open[i] as Change).id);
        if (stubs) early.set(changeKey(open[i] as Change), Promise.resolve(stubs)); // for the next slice
      }
      const plans: DocPlan[] = [];
      for (let i = from; i < to; i++) {
        const change = open[i] as Change;
        const note = noted.get(change.id);
        if (note) {
          plans.push(this.planImported(change.id, note, befores[i] as string[]));
          continue;
        }
        const docs = read.leaves.get(change.id) ?? [];
        const known = new Map(change.revs.map((rev, j) => [rev, (openKinds[i] as RevKind[])[j]]));
        // The kinds read above, unless the leaves were read otherwise (open_revs=all) and differ.
        const unknown = docs.every((d) => known.has(d._rev)) ? docs.map((d) => d._rev).filter((rev) => known.get(rev) === undefined) : await state.unknownRevs(change.id, docs.map((d) => d._rev));
        const plan = await this.plan(change, docs, unknown, befores[i] as string[], ensured);
        if (plan === undefined) retries?.succeeded(batch, change.id, false); // refused for good (logged): no longer waiting
        else if (!('retry' in plan)) plans.push(plan);
        else if (retries) retries.failed(batch, change.id, plan.retry, change); // logs, also when it cannot keep it
        else this.o.log.error('document not published: a large attachment could not be uploaded', { doc: change.id, reason: plan.retry });
      }
      read.leaves.clear(); // the plans have what they need (payloads): the documents can go
      const outcomes = await runBatched(plans.map((p) => p.job), (node, items) => this.publishMany(node, items), PUBLISH_CHUNK);
      for (const [i, outcome] of outcomes.entries()) {
        const plan = plans[i] as DocPlan;
        if (typeof outcome === 'object') {
          failure ??= outcome.error;
          continue;
        }
        if (outcome === 'skipped') continue; // not started: another failed, and the batch is handed over again
        if (outcome === 'done') batch.merge(plan.state);
        // Published, or refused for good (logged): no longer waiting either way.
        retries?.succeeded(batch, plan.docId, outcome === 'done' && plan.job.publications.length > 0);
      }
      from = to;
    }
    await state.commit(batch);
    for (const id of noted.keys()) this.o.imports?.forget(id);
    if (failure !== undefined) throw failure;
  }

  /**
   * The leaves of the documents of `open` (their revisions from the feed): one `_bulk_get`
   * without attachment bodies; a second one with them for the documents that have attachments,
   * have a revision this site does not know (only those are published) and whose attachments
   * fit the inline budget; documents with more, and any `_bulk_get` could not read (a revision
   * gone meanwhile), read one by one (`open_revs=all`). `ahead`: what prefetch() already read for
   * this batch, by change key (a failed read there is read again here). Attachment bodies are
   * read for the first `until` documents only: those whose attachments add up to at most
   * SLICE_BYTES (at least one document); the others have their leaves without bodies, if read.
   */
  private async readLeaves(open: Change[], kinds: RevKind[][], ahead: ReadonlyMap<string, Promise<CouchDoc[] | undefined>>): Promise<{ leaves: Map<string, CouchDoc[]>; until: number }> {
    const { content, inlineAttachmentMax } = this.o;
    const reads: Array<Promise<CouchDoc[] | undefined> | undefined> = [];
    for (const c of open) reads.push(ahead.get(changeKey(c))?.catch(noDocs));
    const found = await Promise.all(reads);
    const unread: Change[] = [];
    for (let i = 0; i < open.length; i++) if (!found[i]) unread.push(open[i] as Change);
    const leaves = await bulkGetRevisions(content, unread, false);
    for (const [i, docs] of found.entries()) if (docs) leaves.set((open[i] as Change).id, docs);
    const withBodies: Change[] = [];
    const alone: string[] = [];
    let until = open.length;
    for (let i = 0, bytes = 0; i < open.length; i++) {
      const change = open[i] as Change;
      const docs = leaves.get(change.id);
      if (!docs) alone.push(change.id);
      if (!docs || !(kinds[i] as RevKind[]).includes(undefined)) continue;
      let attachments = 0;
      let size = 0;
      for (const d of docs) {
        for (const a of Object.values((d._attachments ?? {}) as Record<string, { length?: number }>)) {
          attachments++;
          size += a.length ?? 0;
        }
      }
      if (attachments === 0) continue;
      if (i > 0 && bytes + size > (this.o.sliceBytes ?? SLICE_BYTES)) {
        until = i;
        break;
      }
      bytes += size;
      if (size <= inlineAttachmentMax) withBodies.push(change);
      else alone.push(change.id);
    }
    for (const [id, docs] of await bulkGetRevisions(content, withBodies.map((c) => ({ id: c.id, revs: c.revs })), true)) leaves.set(id, docs);
    for (const c of withBodies) if (!leaves.get(c.id)?.every((d) => hasBodies(d))) alone.push(c.id);
    for (const id of alone) leaves.set(id, await this.leaves(id));
    return { leaves, until };
  }

  /**
   * Starts reading the leaves (no attachment bodies) of a batch the source will hand over
   * (CouchChangesSource `readAhead`: as soon as its page is read, also while the batch before is
   * being published): handle() then finds them read. Decided at once from what memory knows,
   * without waiting for a store read (for a lone edit that read was a step of its latency): a
   * change is skipped when the cached state says every leaf was published here, or imported
   * here and noted by the sink (ImportNotes); anything not in memory (a new revision) is read
   * now, while handle() asks the store. After a restart (nothing cached yet) a replayed page's
   * documents may be read once for nothing. Returns a promise settled (never rejected) when the
   * read answered, undefined when nothing is read.
   */
  prefetch(changes: Change[]): Promise<void> | undefined {
    if (this.ahead.size > AHEAD_MAX) this.ahead.clear(); // never handed over (a stop): drop
    const read = changes.filter((c) => {
      if (c.id.startsWith('_design/') || c.revs.length === 0) return false;
      const kinds = this.o.state.cachedRevKinds(c.id, c.revs);
      return kinds === undefined || (!kinds.every((k) => k === 'p') && !this.o.imports?.usable(c));
    });
    if (read.length === 0) return undefined;
    // A failed read ahead is read again by handle(): each promise kept here is handled now, so a
    // CouchDB blip is never an unhandled rejection (which would end the process).
    const all = bulkGetRevisions(this.o.content, read, false).catch((err: unknown) => {
      this.o.log.debug('reading ahead failed (read again when handled)', { reason: String(err) });
      return undefined;
    });
    for (const c of read) this.ahead.set(changeKey(c), all.then((m) => m?.get(c.id)));
    return all.then(() => undefined);
  }

  /**
   * Hands changes that failed (PublishRetries' items) over again, in this publisher's turn: one
   * no longer waiting (ended or replaced since) is left out, and so is one whose document has
   * other leaves now (a newer change, which the changes feed brings or brought: publishing the
   * older one after it would go back in time) — its wait ends. One whose document is gone
   * (purged) is handled as its change was (retracted from the nodes it had). Rejects as handle() does.
   */
  retry(changes: Change[]): Promise<void> {
    return this.serial.run('', async () => {
      const { retries } = this.o;
      const current: Change[] = [];
      const ended = this.o.state.batch();
      for (const change of changes) {
        if (!retries?.holds(change.id, change)) continue;
        const revs = await this.leafRevisions(change.id);
        // Gone (purged: the feed brings no change for it): handled as the feed's change was, which
        // retracts it from the nodes it had.
        if (revs.length === 0 || (revs.length === change.revs.length && change.revs.every((rev) => revs.includes(rev)))) current.push(change);
        else {
          retries.succeeded(ended, change.id, false);
          this.o.log.debug('a document waiting to be published again has changed since: its newer change is published from the changes feed', { doc: change.id });
        }
      }
      await this.o.state.commit(ended);
      await this.handleNow(current);
    });
  }

  /** The leaf revisions of a document (live and deleted; none when it is gone), without bodies: one `open_revs=all` request. Rejects with the database's error. */
  private async leafRevisions(id: string): Promise<string[]> {
    const revs: string[] = [];
    for (const leaf of await this.leaves(id, false)) revs.push(leaf._rev);
    return revs;
  }

  /** Every leaf revision of a document (live and deleted), with history, and attachments unless `attachments` is false. */
  private async leaves(id: string, attachments = true): Promise<CouchDoc[]> {
    try {
      const res = (await this.o.content.get(id, { open_revs: 'all', ...(attachments ? { revs: true, attachments: true } : {}) } as never)) as unknown as Array<{ ok?: CouchDoc }>;
      return res.flatMap((r) => (r.ok ? [r.ok] : []));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return [];
      throw err;
    }
  }

  /**
   * What publishing one change takes: its steps (publications, then retractions) and the state
   * to record once they all completed; a Retry when a large attachment could not be uploaded for
   * a reason that may pass (nothing recorded as published: handle() has it tried again);
   * undefined when the upload service refused it for good (logged: the next change of the
   * document tries again).
   */
  private async plan(change: Change, leaves: CouchDoc[], unknown: string[], before: string[], ensured: Set<string>): Promise<DocPlan | Retry | undefined> {
    const { state, log, profile } = this.o;
    const record = state.batch();
    const publications: BatchedJob<Publication>['publications'] = [];
    const retractions: PipelineStep[] = [];
    const job: BatchedJob<Publication> = { publications, then: [retractions] };
    const winner = winningRevision(leaves);
    if (!winner) {
      for (const node of before) retractions.push(this.retractStep(node, change.id)); // purged
      if (before.length > 0) record.setNodesOf(change.id, []);
      return { docId: change.id, job, state: record };
    }
    const deleted = winner._deleted === true || isDeleted(winner, profile);
    if (!deleted && stringAt(winner, profile.typePath) === profile.contactType) this.o.onContact?.(winner);
    const nodes = deleted ? [] : tagsOf(winner, profile).map(tagNode);
    // A new revision of a document that stays deleted (a conflict resolved after the deletion, an
    // Ajatus-deleted note edited) goes where the deletion went, so partners keep the same leaves.
    const had = deleted && before.length === 0 && unknown.length > 0 ? await state.deletedFrom(change.id) : before;
    if (unknown.length > 0) {
      try {
        await this.offloadAttachments(leaves);
      } catch (err) {
        const reason = `a large attachment could not be uploaded: ${err instanceof Error ? err.message : String(err)}`;
        if (!(err instanceof UploadRefused)) return { retry: reason };
        this.o.log.error('document not published: the upload service refused a large attachment', { doc: change.id, reason });
        return undefined;
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
          const tag = node.slice(TAG_PREFIX.length);
          if (!deleted && !ensured.has(tag)) {
            await this.ensureNode(tag);
            ensured.add(tag);
          }
          publications.push({ node, item: { docId: change.id, rev: winner._rev, payload, ...(node === targets.at(-1) ? { last: { leaves: leaves.length, nodes: targets, deleted } } : {}) } });
        }
      }
      record.markRevs(change.id, unknown, 'p');
    }
    this.settle(change.id, { had, before, nodes, deleted }, record, retractions);
    return { docId: change.id, job, state: record };
  }

  /**
   * What follows a document's publications in every case: retractions from the nodes it had
   * (`had`) and no longer goes to (`nodes`), and the record of where it is now.
   */
  private settle(docId: string, where: { had: string[]; before: string[]; nodes: string[]; deleted: boolean }, record: StateBatch, retractions: PipelineStep[]): void {
    const { had, before, nodes, deleted } = where;
    for (const node of had) if (!nodes.includes(node)) retractions.push(this.retractStep(node, docId));
    if (deleted && before.length > 0) record.setDeletedFrom(docId, before);
    if (JSON.stringify(before) !== JSON.stringify(nodes)) record.setNodesOf(docId, nodes);
  }

  /**
   * A change whose leaves were all imported (or published) here, seen as the sink wrote them
   * (`note`): nothing to publish, and no need to read the document — only its retractions and
   * the record of its nodes, as plan() would do with the leaves read.
   */
  private planImported(docId: string, note: ImportNote, before: string[]): DocPlan {
    const record = this.o.state.batch();
    const retractions: PipelineStep[] = [];
    if (note.contact) this.o.onContact?.(note.contact);
    this.settle(docId, { had: before, before, nodes: note.nodes, deleted: note.deleted }, record, retractions);
    return { docId, job: { publications: [], then: [retractions] }, state: record };
  }

  /**
   * Publishes entries of several documents on one node (one publishMany: one node lock, one
   * store write), resolving to one result per entry. A refusal of an entry (e.g.
   * payload-too-big) is final for that revision: logged, and 'stop' ends the document there
   * (not recorded); anything else (the store failing) rejects, and the batch is handed over again.
   */
  private async publishMany(node: string, items: Publication[]): Promise<Array<void | 'stop'>> {
    // Refused for every entry (the node gone, publishing forbidden): final for them as well.
    // Loops, not per-call callbacks (src/util/hot-loops.md).
    const entries: Array<{ id: string; payload: string }> = [];
    for (const p of items) entries.push({ id: p.docId, payload: p.payload });
    const outcomes = await publishEntries(this.o.service, this.o.actor, node, entries);
    const results: Array<void | 'stop'> = [];
    for (let i = 0; i < items.length; i++) {
      const p = items[i] as Publication;
      const outcome = outcomes[i];
      if (outcome && 'error' in outcome) {
        this.o.log.error('document not published: the node refused it', { doc: p.docId, node, condition: outcome.error.condition, reason: outcome.error.text });
        results.push('stop');
        continue;
      }
      this.published++;
      this.o.onPublish?.(node, p.docId, p.rev);
      if (p.last) this.o.log.debug('published document', { doc: p.docId, rev: p.rev, ...p.last });
      results.push(undefined);
    }
    return results;
  }

  private retractStep(node: string, docId: string): PipelineStep {
    return { node, run: () => this.retract(node, docId) };
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

  /**
   * Creates the node for a tag on first use, with the tag's settings; applies them again to one
   * whose settings could not be applied last time (`accessPending`).
   */
  private async ensureNode(tag: string): Promise<void> {
    const settings = this.o.settings.tag(tag);
    if ((await ensureNode(this.o.service, this.o.actor, tagNode(tag), settings, `Documents tagged ${tag}`)) || this.accessPending.has(tag)) await this.applyTagSettings(tag, settings);
  }

  /** Tags whose settings failed to apply (the store failing, a node lock lost): applied again at the tag's next publication. */
  private readonly accessPending = new Set<string>();

  /**
   * Makes a tag node's access model and member list match its settings document. Rejects with
   * the service's error; the tag is then applied again before its next publication (and at every
   * start, for tags with a settings document).
   */
  async applyTagSettings(tag: string, settings: TagSettings): Promise<void> {
    let changed: Awaited<ReturnType<typeof applyNodeAccess>>;
    try {
      changed = await applyNodeAccess(this.o.service, this.o.actor, tagNode(tag), settings); // no node yet: created on first publish
    } catch (err) {
      this.accessPending.add(tag);
      throw err;
    }
    this.accessPending.delete(tag);
    if (changed) this.o.log.info('tag whitelist applied', { tag, ...changed });
  }
}

/** What the publisher needs of a document whose leaves a partner sent (ImportNotes). */
export interface ImportNote {
  /** The winning revision of the leaves written, and every leaf revision written. */
  rev: string;
  leaves: string[];
  /** Whether the winner is a CouchDB tombstone (as `_changes` says `deleted`). */
  tombstone: boolean;
  /** Deleted (tombstone or the profile's flag): on no node. */
  deleted: boolean;
  /** The nodes of its tags (none when deleted). */
  nodes: string[];
  /** The winner, when it is a live contact (partners). */
  contact?: CouchDoc;
}

/**
 * Notes, in memory, what the sink wrote of each imported document (its leaves, winner first, as
 * the partner's entry carries them), so that the publisher, seeing the change that write made,
 * needs no read of the document: a change whose leaves are all known here, whose winner is the
 * noted one and every one of which was in the entry has the entry's winner as its winner
 * (CouchDB's winner is a function of the leaves). Anything else — a note missing (a restart, the
 * LRU full), other leaves — is read from CouchDB as before. Bounded (an LRU).
 */
export class ImportNotes {
  private readonly notes = new LRUCache<string, ImportNote>({ max: 20_000 });

  constructor(private readonly profile: Profile) {}

  /** Called before the leaves of one document (winner first) are written locally. */
  note(docs: CouchDoc[]): void {
    const winner = docs[0];
    if (!winner) return;
    const deleted = isDeleted(winner, this.profile);
    const contact = !deleted && stringAt(winner, this.profile.typePath) === this.profile.contactType ? winner : undefined;
    this.notes.set(winner._id, {
      rev: winner._rev,
      leaves: docs.map((d) => d._rev),
      tombstone: winner._deleted === true,
      deleted,
      nodes: deleted ? [] : tagsOf(winner, this.profile).map(tagNode),
      ...(contact ? { contact } : {}),
    });
  }

  /** The note that stands for `change` (see the class), if any. */
  usable(change: Change): ImportNote | undefined {
    const note = this.notes.get(change.id);
    if (!note || !change.revs.includes(note.rev) || note.tombstone !== change.deleted) return undefined;
    return change.revs.every((rev) => note.leaves.includes(rev)) ? note : undefined;
  }

  forget(docId: string): void {
    this.notes.delete(docId);
  }
}
