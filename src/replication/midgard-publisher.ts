// Publishing side of Midgard replication: each serialized object (from D-Bus or the spool) goes,
// with its immediate children, to the nodes the mapping gives it, as an Atom entry whose item id
// is the object's GUID. A child's own change (parameter, attachment) re-publishes the parent's
// item with the child merged in. A deleted/purged object is published once as its tombstone to
// the nodes that had it, then retracted with notification. Leaving a node (unapproved, moved
// topic) retracts it from that node. Not published again: objects re-emitted by Midgard's
// importer (replication signals, or the very version Hermod delivered), and unchanged documents.
// Blobs beyond `inlineBlobMax` bytes per document (the smallest stay inline) are uploaded through
// XEP-0363 (the code Ajatus uses) and travel as references; a failed upload publishes nothing.
// Also keeps the topic index (paths) and the partners (midgard_person objects with a JID): a
// person deleted or purged, or whose JID property/parameter is removed, ends that partnership.
// Batches (handleBatch): the objects of a batch are planned in feed order (what each publishes
// and retracts, from the state the ones before it left), their publications go per node in few
// publishMany calls (pipeline.ts runBatched: one node lock and one store write per chunk of ≤ 250
// entries / 4 MiB, feed order kept per node and so per GUID), then their retractions run
// pipelined; a version coming after one that retracts is planned in the next round, so a
// retraction never overtakes a later publication of the same object. The records
// that depend on a publication (nodes, hash) are kept only for objects whose steps all completed;
// everything recorded is written in one store write per batch (flush).

import { createHash } from 'node:crypto';
import {
  ATTACHMENT,
  BLOB,
  buildMidgardEntry,
  childElements,
  replaceBlobs,
  type BlobRef,
  composeDocument,
  isDeleted,
  parseMidgardDate,
  parseMidgardXml,
  readMidgardElement,
  revisedOf,
  serializeMidgard,
  TOPIC,
  type MidgardDocument,
  type MidgardObject,
  versionsOf,
} from '../codecs/midgard.ts';
import type { Logger } from '../log.ts';
import { PubsubError } from '../pubsub/errors.ts';
import type { ReplicationService } from './replication.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { publishChunk, publishEntries, runBatched, type BatchedJob, type BatchedStep, type PipelineOutcome, type PipelineStep } from './pipeline.ts';
import { Element, parse } from 'ltx';
import { nodesFor, objectPath, topicEntry, type MidgardNodeMapping, type TopicEntry, type TopicIndex } from './midgard-mapping.ts';
import { enclosure, splitByBudget, UploadRefused, type Offloader } from './http-upload.ts';
import { applyNodeAccess, ensureNode, type NodeAccess } from './node-access.ts';
import { DeferredState, type ReplicationState } from './state.ts';

/** Where a document came from: a D-Bus signal (area `mgdschema` or `replication`) or a spool file. */
export interface MidgardOrigin {
  source: 'dbus' | 'spool';
  area?: string;
  action?: string;
}

export interface PartnerJidRule {
  /** Property of midgard_person holding a JID. */
  property: string | undefined;
  /** Parameter `domain/name` of the person holding a JID. */
  parameter: { domain: string; name: string } | undefined;
}

export interface MidgardPublisherOptions {
  service: ReplicationService;
  actor: string;
  state: ReplicationState;
  mapping: MidgardNodeMapping;
  access: (node: string) => NodeAccess;
  index: TopicIndex;
  partnerJid: PartnerJidRule;
  log: Logger;
  onPartner: (jid: string) => void;
  /** A JID no midgard_person carries any more (the person deleted, or its JID removed). */
  onPartnerGone?: (jid: string) => void;
  /** Blob bytes carried inline per document (smallest first); the rest go through `offloader`. */
  inlineBlobMax?: number;
  offloader?: Offloader;
}

/** One serialized document of a batch, with where it came from. */
export interface MidgardInput {
  text: string;
  origin: MidgardOrigin;
}

/** How one document of a batch ended: handled (published, or nothing to publish), or the error that made it skipped (MidgardFormatError, BlobUploadError, a refusal or store failure of the service). */
export type MidgardOutcome = 'done' | { error: unknown };

/** One entry of a batch for PubsubService.publishMany: item id (the GUID) and payload. */
interface Entry {
  id: string;
  payload: string;
}

/** One publishMany call takes at most 250 entries / 4 MiB (pipeline.ts). */
const PUBLISH_CHUNK = publishChunk<Entry>((e) => e.payload);

/** What publishing one document takes (plan): its steps, and what is recorded once they all completed. */
interface DocPlan {
  guid: string;
  /** Publications (batched per node), then retractions (pipeline.ts). */
  job: BatchedJob<Entry>;
  /** Records (kind, id, value) kept once every step completed. */
  records: Array<[string, string, unknown]>;
  /** Logs and counts the publication once it completed. */
  done(): void;
}

/** A blob beyond the inline budget that could not be uploaded: the document is not published. `refused`: the upload service refused it for good (UploadRefused), trying again cannot help. */
export class BlobUploadError extends Error {
  constructor(
    message: string,
    readonly refused = false,
  ) {
    super(message);
    this.name = 'BlobUploadError';
  }
}

export class MidgardPublisher {
  private readonly lock = new KeyedMutex();
  published = 0;
  /** The records written while handling, written to the store by flush() (one write per batch). */
  private readonly st: DeferredState;
  /**
   * Nodes whose access this run made match `midgard.access` (created, or found, on first use):
   * the config file is where node access comes from, so a node created by an earlier run, or
   * whose settings could not be applied (the store failing just after it was created), is set
   * again on its first use in this run — once it succeeded, not again.
   */
  private readonly accessApplied = new Set<string>();

  constructor(private readonly o: MidgardPublisherOptions) {
    this.st = new DeferredState(o.state);
  }

  /**
   * Writes the records of what was handled since the last flush in one store write (the feeds
   * call it after each batch). Rejects with the store's error (kept: the next flush tries again).
   */
  flush(): Promise<void> {
    return this.st.flush();
  }

  /** Loads the topic index and known partners kept from earlier runs. */
  async restore(): Promise<void> {
    // A deleted topic is kept as null (DeferredState writes, it does not delete): not indexed.
    for (const [guid, entry] of await this.o.state.records<TopicEntry | null>('topic')) if (entry) this.o.index.set(guid, entry);
    for (const [, jid] of await this.o.state.records<string | null>('person')) if (jid) this.o.onPartner(jid);
  }

  /** Handles one serialized document (a batch of one). Throws MidgardFormatError for a malformed one, or what made it fail. */
  async handle(text: string, origin: MidgardOrigin): Promise<void> {
    const [outcome] = await this.handleBatch([{ text, origin }]);
    if (outcome !== undefined && outcome !== 'done') throw outcome.error;
  }

  /**
   * Handles a batch of serialized documents in feed order: each is planned (learning topics and
   * persons, merging children, echo and unchanged checks, blob uploads) from the state the ones
   * before it left, then all their publications and retractions run pipelined. A document that
   * fails (malformed, an upload or publish that fails) does not stop the others; one of the same
   * object after it is planned again once it settled, so an object's versions stay in order.
   * Batches run one at a time (both feeds share one publisher). Resolves to one outcome per
   * document; the records stay in memory until flush().
   */
  handleBatch(inputs: MidgardInput[]): Promise<MidgardOutcome[]> {
    return this.lock.run('batch', () => this.runBatch(inputs));
  }

  private async runBatch(inputs: MidgardInput[]): Promise<MidgardOutcome[]> {
    const outcomes: MidgardOutcome[] = inputs.map(() => 'done');
    const docs: Array<MidgardDocument | undefined> = inputs.map((input, i) => {
      try {
        return parseMidgardXml(input.text);
      } catch (error) {
        outcomes[i] = { error };
        return undefined;
      }
    });
    let todo = docs.flatMap((d, i) => (d ? [i] : []));
    // Each round settles at least one document (all, or the one a failed write is blamed on; a
    // version deferred behind a retraction follows one that settles), so this ends.
    try {
      while (todo.length > 0) todo = await this.round(inputs, docs, todo, outcomes);
    } finally {
      this.st.forget();
    }
    return outcomes;
  }

  /** One round of runBatch over the documents `todo` (indices): plans, runs, records; resolves to the indices to plan again. */
  private async round(inputs: MidgardInput[], docs: Array<MidgardDocument | undefined>, todo: number[], outcomes: MidgardOutcome[]): Promise<number[]> {
    // The records every plan reads, in one store read. 'in' (the versions the sink delivered) is
    // written by the sink meanwhile: read here at the round's start instead of at each plan, which
    // an echo signal comes after anyway (the importer sees the file only after the sink wrote it).
    const guids = [...new Set(todo.map((i) => keyOf(docs[i] as MidgardDocument)))];
    const versions = [...new Set(todo.flatMap((i) => versionsOf(docs[i] as MidgardDocument).map(([guid]) => guid)))];
    await this.st.prefetch([...guids.flatMap((g) => [['doc', g], ['nodes', g], ['pub', g]] as const), ...versions.map((g) => ['in', g] as const)]);
    const overlay = new Map<string, unknown>();
    const planned: Array<{ i: number; plan: DocPlan }> = [];
    const ensured = new Set<string>();
    // Publications run before retractions: a version after one that retracts waits for the next round.
    const retracting = new Set<string>();
    const later: number[] = [];
    for (const i of todo) {
      const guid = keyOf(docs[i] as MidgardDocument);
      if (retracting.has(guid)) {
        later.push(i);
        continue;
      }
      try {
        const plan = await this.plan(docs[i] as MidgardDocument, (inputs[i] as MidgardInput).origin, overlay, ensured);
        if (plan) planned.push({ i, plan });
        if (plan?.job.then.some((phase) => phase.length > 0)) retracting.add(guid);
      } catch (error) {
        outcomes[i] = { error };
      }
    }
    const { service, actor } = this.o;
    const publishMany = async (node: string, entries: Entry[]): Promise<Array<void | { error: unknown }>> =>
      (await publishEntries(service, actor, node, entries)).map((outcome) => ('error' in outcome ? { error: outcome.error } : undefined));
    const results: PipelineOutcome[] = await runBatched(planned.map((p) => p.plan.job), publishMany, PUBLISH_CHUNK);
    const again: number[] = [...later];
    const unsettled = new Set<string>();
    for (const [k, { i, plan }] of planned.entries()) {
      const result = results[k] as PipelineOutcome;
      // A later version of an object whose earlier one did not complete is planned again.
      if (result === 'skipped' || unsettled.has(plan.guid)) {
        unsettled.add(plan.guid);
        again.push(i);
        continue;
      }
      if (typeof result === 'object') {
        unsettled.add(plan.guid);
        outcomes[i] = { error: result.error };
        continue;
      }
      for (const [kind, id, value] of plan.records) this.st.setRecord(kind, id, value);
      plan.done();
    }
    return again.sort((a, b) => a - b);
  }

  /**
   * What publishing one document takes, or undefined when nothing is published (an echo, a
   * read, unchanged, a child of an unknown parent). Records that do not depend on publishing
   * (the merged document, topics, persons) are kept at once; the others go to `overlay` (seen by
   * the plans after it in this round) and to the plan. Throws BlobUploadError.
   */
  private async plan(doc: MidgardDocument, origin: MidgardOrigin, overlay: Map<string, unknown>, ensured: Set<string>): Promise<DocPlan | undefined> {
    const { log } = this.o;
    const state = this.st;
    await this.learnTopic(doc);
    // A person is judged on its merged document: an update of the object alone (Midgard signals
    // each object on its own) keeps the JID parameter seen before; a deleted parameter drops it.
    const person = await this.mergedPerson(doc);
    if (person) await this.learnPerson(person);
    if (origin.area === 'replication') {
      log.info('echo suppressed: replication signal', { guid: doc.main?.guid, action: origin.action });
      return undefined;
    }
    if (origin.action === 'get') {
      // midgard-core also signals reads (`…/<Class>/get`): the state is learnt, nothing changed.
      log.debug('read notification: nothing published', { guid: doc.main?.guid });
      return undefined;
    }
    const stored = await state.record<string>('doc', keyOf(doc));
    const previous = stored ? readMidgardElement(parse(stored) as Element) : undefined;
    let mainEl: Element;
    if (doc.main) mainEl = doc.main.element;
    else if (previous?.main) mainEl = previous.main.element;
    else {
      log.warn('child change skipped: its parent object has not been seen', { parent: doc.parameters[0]?.parentGuid ?? doc.attachments[0]?.parentGuid });
      return undefined;
    }
    const merged = readMidgardElement(composeDocument(mainEl, mergeChildren(previous ? childElements(previous) : [], childElements(doc))));
    state.setRecord('doc', merged.main?.guid as string, merged.root.toString());
    if (await this.isEcho(doc)) {
      log.info('echo suppressed: version delivered from a partner', { guid: merged.main?.guid });
      return undefined;
    }
    return this.planPublish(merged, overlay, ensured);
  }

  /** Every object of the incoming document is the version Hermod itself delivered. */
  private async isEcho(doc: MidgardDocument): Promise<boolean> {
    for (const [guid, version] of versionsOf(doc)) if ((await this.st.record<string>('in', guid)) !== version) return false;
    return true;
  }

  /** Topic index from what passes by (imports included). */
  private async learnTopic(doc: MidgardDocument): Promise<void> {
    const main = doc.main;
    if (main?.className !== TOPIC) return;
    if (isDeleted(main)) {
      this.o.index.delete(main.guid);
      this.st.setRecord('topic', main.guid, null); // a restart must not bring it back
    } else {
      this.o.index.set(main.guid, topicEntry(main));
      this.st.setRecord('topic', main.guid, topicEntry(main));
    }
  }

  /** The person document (with the children seen so far) when `doc` is about a midgard_person or its children. */
  private async mergedPerson(doc: MidgardDocument): Promise<MidgardDocument | undefined> {
    const guid = doc.main?.guid ?? doc.parameters[0]?.parentGuid ?? doc.attachments[0]?.parentGuid;
    if (!guid || (doc.main && doc.main.className !== 'midgard_person')) return undefined;
    const stored = await this.st.record<string>('doc', guid);
    const previous = stored ? readMidgardElement(parse(stored) as Element) : undefined;
    const mainEl = doc.main?.element ?? previous?.main?.element;
    if (!mainEl || (!doc.main && previous?.main?.className !== 'midgard_person')) return undefined;
    return readMidgardElement(composeDocument(mainEl, mergeChildren(previous ? childElements(previous) : [], childElements(doc))));
  }

  /**
   * Partners from midgard_person objects (imports included): a JID found makes a partner; a
   * person deleted or purged, or whose JID is gone (property emptied, parameter deleted or
   * changed), ends the partnership unless another person still carries that JID.
   */
  private async learnPerson(doc: MidgardDocument): Promise<void> {
    const main = doc.main as MidgardObject;
    const { log } = this.o;
    const state = this.st;
    const jid = isDeleted(main) ? undefined : this.partnerJidOf(doc);
    const known = (await state.record<string | null>('person', main.guid)) ?? undefined; // null: no JID any more
    if (jid) {
      if (known !== jid) state.setRecord('person', main.guid, jid);
      this.o.onPartner(jid);
    }
    if (known === undefined || known === jid) return;
    if (!jid) state.setRecord('person', main.guid, null);
    const still = (await state.records<string>('person')).some(([, other]) => other === known);
    log.info('midgard_person no longer carries the partner JID', { person: main.guid, jid: known, deleted: isDeleted(main), otherPerson: still });
    if (!still) this.o.onPartnerGone?.(known);
  }

  private partnerJidOf(doc: MidgardDocument): string | undefined {
    const { property, parameter } = this.o.partnerJid;
    const fromProperty = property ? doc.main?.fields[property]?.trim() : undefined;
    if (fromProperty) return fromProperty;
    if (!parameter) return undefined;
    const p = doc.parameters.find((x) => x.fields.domain === parameter.domain && x.fields.name === parameter.name && !isDeleted(x));
    return p?.fields.value?.trim() || undefined;
  }

  /** The publications (and retractions) of a merged document: see plan(). */
  private async planPublish(doc: MidgardDocument, overlay: Map<string, unknown>, ensured: Set<string>): Promise<DocPlan | undefined> {
    const main = doc.main as MidgardObject;
    const { log, service, actor } = this.o;
    const read = async <T>(kind: string, id: string): Promise<T | undefined> => {
      const key = `${kind}\0${id}`;
      return overlay.has(key) ? (overlay.get(key) as T) : this.st.record<T>(kind, id);
    };
    const before = (await read<string[]>('nodes', main.guid)) ?? [];
    const path = objectPath(main, this.o.index);
    const hash = createHash('sha256').update(serializeMidgard(doc.root)).digest('hex');
    if (isDeleted(main) && before.length === 0) return undefined;
    const nodes = isDeleted(main) ? [] : nodesFor(main, this.o.mapping, this.o.index);
    if (!isDeleted(main) && (await read<string>('pub', main.guid)) === hash && JSON.stringify(before) === JSON.stringify(nodes)) {
      log.debug('midgard object unchanged; not published again', { guid: main.guid });
      return undefined;
    }
    const outgoing = await this.offloadBlobs(doc);
    const payload = buildMidgardEntry(outgoing.doc, { categories: path ? [path] : [], links: outgoing.links }).toString();
    const records: Array<[string, string, unknown]> = [
      ['nodes', main.guid, nodes],
      ['pub', main.guid, hash],
    ];
    for (const [kind, id, value] of records) overlay.set(`${kind}\0${id}`, value);
    const publish = (node: string): BatchedStep<Entry> => ({ node, item: { id: main.guid, payload } });
    const retract = (node: string): PipelineStep => ({ node, run: () => this.retract(node, main.guid) });
    const planned = (publications: Array<BatchedStep<Entry>>, retractions: PipelineStep[], msg: string, fields: Record<string, unknown>): DocPlan => ({
      guid: main.guid,
      job: { publications, then: [retractions] },
      records,
      done: () => {
        this.published++;
        log.info(msg, { guid: main.guid, class: main.className, ...fields });
      },
    });
    // A deletion: published once as its tombstone where it was, then retracted with notification.
    if (isDeleted(main)) return planned(before.map(publish), before.map(retract), 'retracted midgard object', { nodes: before, revised: revisedOf(main) });
    for (const node of nodes) {
      if (ensured.has(node)) continue;
      ensured.add(node);
      await ensureNode(service, actor, node, this.o.access(node), `Midgard ${node}`);
      if (this.accessApplied.has(node)) continue;
      const changed = await applyNodeAccess(service, actor, node, this.o.access(node));
      this.accessApplied.add(node);
      if (changed) log.info('node whitelist applied', { node, ...changed });
    }
    const left = before.filter((n) => !nodes.includes(n));
    return planned(nodes.map(publish), left.map(retract), 'published midgard object', { nodes, retractedFrom: left, revised: revisedOf(main), path });
  }

  /**
   * The document as published: blobs beyond `inlineBlobMax` bytes (the smallest stay inline)
   * uploaded and replaced by references, with an Atom enclosure each for feed readers. Throws
   * BlobUploadError (logged) when one cannot be uploaded: nothing is published.
   */
  private async offloadBlobs(doc: MidgardDocument): Promise<{ doc: MidgardDocument; links: Element[] }> {
    const max = this.o.inlineBlobMax ?? Number.POSITIVE_INFINITY;
    const blobs = [...doc.blobs].map(([guid, data]) => ({ guid, data, size: Buffer.byteLength(data, 'base64') }));
    const over = splitByBudget(blobs, (b) => b.size, max);
    if (over.length === 0) return { doc, links: [] };
    const main = doc.main as MidgardObject;
    const refs = new Map<string, BlobRef>();
    const links: Element[] = [];
    for (const blob of over) {
      const att = doc.attachments.find((a) => a.guid === blob.guid);
      const name = att?.fields.name?.trim() || blob.guid;
      try {
        if (!this.o.offloader) throw new Error('no upload service is configured');
        const ref = await this.o.offloader.offload({
          filename: `${main.guid}-${name}`,
          bytes: Buffer.from(blob.data, 'base64'),
          contentType: att?.fields.mimetype?.trim() || 'application/octet-stream',
          logFields: { guid: main.guid, attachment: blob.guid, name },
        });
        refs.set(blob.guid, ref);
        links.push(enclosure(ref, name));
      } catch (err) {
        // Not logged here: whoever handed the document over logs the outcome once (a D-Bus
        // document waiting or skipped, a spool file kept or moved to failed/), with this message.
        const reason = err instanceof Error ? err.message : String(err);
        throw new BlobUploadError(`midgard object ${main.guid} not published: the blob of attachment ${blob.guid} (${blob.size} bytes, above midgard.inlineBlobMax) could not be uploaded: ${reason}`, err instanceof UploadRefused);
      }
    }
    return { doc: replaceBlobs(doc, refs), links };
  }

  private async retract(node: string, id: string): Promise<void> {
    try {
      await this.o.service.retract(this.o.actor, node, [id], true);
    } catch (err) {
      if (err instanceof PubsubError && err.condition === 'item-not-found') return;
      throw err;
    }
  }
}

/**
 * The GUID of the object a serialized document is about (its main object, else its first
 * parameter or attachment), or undefined when it cannot be parsed: what a document waiting to be
 * published again (PublishRetries) is known by.
 */
export function objectKey(text: string): string | undefined {
  try {
    const doc = parseMidgardXml(text);
    return doc.main?.guid ?? doc.parameters[0]?.guid ?? doc.attachments[0]?.guid;
  } catch {
    return undefined;
  }
}

/**
 * Every object a serialized document carries: GUID -> its metadata/revised (ms since the epoch;
 * undefined when it has none). Empty when the document cannot be parsed.
 */
export function objectVersions(text: string): Map<string, number | undefined> {
  const out = new Map<string, number | undefined>();
  try {
    const doc = parseMidgardXml(text);
    for (const obj of [...(doc.main ? [doc.main] : []), ...doc.parameters, ...doc.attachments]) out.set(obj.guid, parseMidgardDate(revisedOf(obj) || undefined));
  } catch {
    /* not a document: nothing */
  }
  return out;
}

/** The GUID a document's records are kept under: its main object's, or its children's parent's. */
const keyOf = (doc: MidgardDocument): string => doc.main?.guid ?? doc.parameters[0]?.parentGuid ?? doc.attachments[0]?.parentGuid ?? '';

/**
 * Children of the stored document, replaced by incoming ones of the same class and GUID unless
 * the incoming copy is older (metadata/revised), new ones appended. A blob follows its attachment.
 * A newer attachment that comes without a blob (midgard-core's signal of an attachment carries
 * none) keeps the stored blob: the usual such change is a rename or new metadata, and dropping
 * the blob would leave a partner that reads this item first (a new one, or one without history)
 * with no content at all. Changed content travels with an export that carries the blob (README).
 */
function mergeChildren(stored: Element[], incoming: Element[]): Element[] {
  const id = (e: Element): string => `${e.name}:${String(e.attrs.guid).toLowerCase()}`;
  const revised = (e: Element | undefined): number | undefined => parseMidgardDate(e?.getChild('metadata')?.getChildText('revised') ?? undefined);
  const out = new Map<string, Element>();
  for (const e of stored) out.set(id(e), e);
  const keptAttachments = new Set<string>();
  for (const e of incoming) {
    const old = out.get(id(e));
    const [a, b] = [revised(e), revised(old)];
    if (e.name === BLOB ? keptAttachments.has(String(e.attrs.guid).toLowerCase()) : a !== undefined && b !== undefined && a < b) {
      if (e.name === ATTACHMENT) keptAttachments.add(String(e.attrs.guid).toLowerCase());
      continue;
    }
    out.set(id(e), e);
  }
  return [...out.values()];
}
