// The Ajatus adapter (CouchDB documents), run by the shared replication (replication.ts):
//   content db _changes (CouchChangesSource) -> AjatusPublisher -> pub/sub service (one node per tag)
//   partner notifications / catch-up -> PartnerManager -> CouchSink -> content db (or a
//   partner's targetDb)
//   app db (ajatus_db) settings -> tag node access + whitelists, partner follow lists
// The content database is both source and sink target; echoes are stopped by ReplicationState.

import nano, { type DocumentScope, type ServerScope } from 'nano';
import { IqError } from '../xmpp/iq-error.ts';
import { CODECS, JSON_CONTAINER, parseEntry, type CouchDoc, type Json } from '../codecs/couch-doc.ts';
import type { AjatusConfig } from '../config/config.ts';
import type { Logger } from '../log.ts';
import { CouchSink } from '../sinks/couchdb.ts';
import { PouchValidationCheck } from '../sinks/pouchdb-validation.ts';
import { CouchChangesSource, type Change } from '../sources/couchdb-changes.ts';
import { Element, parse } from 'ltx';
import { AjatusPublisher, ImportNotes, TAG_PREFIX, tagNode, winningRevision } from './ajatus-publisher.ts';
import { carrierCandidates } from './carriers.ts';
import { parentDomain } from '../config/config.ts';
import type { PubsubClient } from '../xmpp/pubsub-client.ts';
import { HttpUploader } from './http-upload.ts';
import { writeTogether, type PartnerSink } from '../sinks/sink.ts';
import { Progress } from './progress.ts';
import { PublishRetries } from './publish-retries.ts';
import { isDeleted, PROFILES, stringAt, tagsOf, type Profile } from './profile.ts';
import { feed, Replication, type AdapterContext, type ReplicationAdapter, type ReplicationCommon } from './replication.ts';
import { transformFor, type AppSettings } from './settings.ts';
import { TransformError } from '../transform/xslt.ts';
import { COUCH_REQUEST_TIMEOUT_MS } from '../store/couch-answers.ts';

export interface AjatusOptions {
  couchUrl: string;
  config: AjatusConfig;
  settings: AppSettings;
}

/** A transform's <json/> output as a CouchDB document to write (no revision of its own). */
export function transformedDoc(root: Element): { _id: string; [key: string]: Json } {
  let doc: unknown;
  try {
    doc = JSON.parse(root.getText());
  } catch (err) {
    throw new TransformError(`the <json/> output is not JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new TransformError('the <json/> output is not a JSON object (a CouchDB document)');
  const id = (doc as { _id?: unknown })._id;
  if (typeof id !== 'string' || id.length === 0) throw new TransformError('the <json/> output has no _id string');
  if (id.startsWith('_')) throw new TransformError(`the <json/> output's _id ${JSON.stringify(id)} is reserved (_design, _local): not written`);
  return doc as { _id: string; [key: string]: Json };
}

/**
 * Where a retracted item is still offered ("service node"): a node this sink follows and that has
 * an item `itemId` now — of `service` first, then of another partner's service writing into the
 * same database (only the nodes of the tags of `current`, the local document, when given) —, or
 * undefined when none has.
 */
export type CarrierLookup = (service: string, itemId: string, partner: string | undefined, current?: CouchDoc) => Promise<string | undefined>;

/**
 * Whether `service` itself still offers `itemId` on one of the nodes a retraction would ask it
 * about (followed now, or followed in an earlier run and named by the partner's settings): true
 * when one has it; false when every one answers that it has not (nodeOffersItem). Rejects when
 * there is no node to ask (not followed again yet, its partner not known or removed) or no node
 * has it and one gave an answer that tells nothing: then nobody knows.
 */
export type OfferLookup = (service: string, itemId: string, partner: string | undefined) => Promise<boolean>;

/**
 * Whether `node` of `service` has an item `itemId` now (XEP-0060 §6.5.8, items by id): true
 * when the answer carries it; false when it is empty or an error says the item (or the node)
 * is not there for us (item-not-found, forbidden, …). Throws IqError when the service
 * did not answer (timeout, unreachable, internal error) or refused for now (any error of type
 * wait, such as a rate limit's policy-violation: IqError.undecided): then nobody knows.
 */
export async function nodeHasItem(client: PubsubClient, service: string, node: string, itemId: string): Promise<boolean> {
  try {
    return (await client.itemsById(service, node, [itemId])).some((i) => i.attrs.id === itemId);
  } catch (err) {
    if (err instanceof IqError && !err.undecided) return false;
    throw err;
  }
}

/**
 * Whether `node` of `service` offers an item `itemId` now, told strictly (quarantined leaves:
 * dropping one loses its only copy): true when the answer carries it; false only when the answer
 * is empty or item-not-found (XEP-0060 §6.5.9.x: no such item, or node). Rejects with the IqError
 * of any other answer (forbidden or not-allowed — a whitelist changed for a while —, a rate
 * limit's policy-violation, not-authorized, feature-not-implemented, a timeout, an internal
 * error): not known. Of a node not `followed` now (known from an earlier run only), forbidden,
 * not-allowed and not-authorized also say it offers us nothing (it was closed to us since).
 */
export async function nodeOffersItem(client: PubsubClient, service: string, node: string, itemId: string, followed = true): Promise<boolean> {
  try {
    return (await client.itemsById(service, node, [itemId])).some((i) => i.attrs.id === itemId);
  } catch (err) {
    if (err instanceof IqError && (err.condition === 'item-not-found' || (!followed && CLOSED_TO_US.has(err.condition)))) return false;
    throw err;
  }
}

/** Refusals that, from a node we no longer follow (known from an earlier run only), say it is closed to us: it offers us nothing. */
const CLOSED_TO_US = new Set(['forbidden', 'not-allowed', 'not-authorized']);

/**
 * Partners' leaves into the content database (revisions kept), retractions as guarded deletions.
 * Whether a retracted document goes is decided on what the source says now, never on the tags of
 * the local copy (which are stale once the source changed them): a deletion revision of the
 * source's own (the Ajatus deleted flag; a CouchDB tombstone is not even live here) is kept as
 * the source wrote it — no revision of this site's own; else the document is deleted only when
 * no followed node of that service has the item any more (`carrier`). `beforeWrite` hears of
 * each document's leaves (winner first) before they are written (ImportNotes).
 * A refused leaf in the quarantine is withdrawn (`withdrawn`: dropped, not written) when its
 * service offers the item on none of the nodes it would be asked on (`lookups.offered`, strict):
 * that partner has withdrawn what the leaf carries, and written it could bring back a document
 * the retraction deleted here (live beats deleted), win beside a local edit or another partner's
 * revision, or create a document the partner no longer shares. A deletion leaf is never withdrawn
 * (written, it leaves the document deleted: a tombstone or the profile's deleted flag).
 */
export function couchPartnerSink(
  sinkFor: (partner: string | undefined) => CouchSink,
  profile: Profile,
  log: Logger,
  lookups: { carrier: CarrierLookup; offered: OfferLookup },
  beforeWrite?: (docs: CouchDoc[], partner: string | undefined) => void,
): PartnerSink {
  const { carrier, offered } = lookups;
  const sink: PartnerSink = {
    async writeItem(service, node, item, partner) {
      const payload = item.getChildElements()[0];
      if (!payload) return false;
      let docs: CouchDoc[];
      try {
        docs = parseEntry(payload);
      } catch (err) {
        log.warn('leaf skipped: not a replicated document', { service, node, item: item.attrs.id, reason: String(err) });
        return false;
      }
      if (docs[0]?._id !== item.attrs.id) {
        log.warn('leaf skipped: item id differs from document id', { service, node, item: item.attrs.id, doc: docs[0]?._id });
        return false;
      }
      beforeWrite?.(docs, partner);
      await sinkFor(partner).write(docs);
      return true;
    },
    /** Every leaf at once: the CouchSink writes them in one flush (or a few); one failing is logged and fails alone. */
    writeItems: (leaves) =>
      writeTogether(leaves, ({ service, node, item, partner }) =>
        sink.writeItem(service, node, item, partner).catch((err: unknown) => {
          log.error('writing a replicated document failed', { from: service, node, item: item.attrs.id, reason: String(err) });
          throw err;
        }),
      ),
    async retract(service, _node, itemId, _followed, partner) {
      await sinkFor(partner).remove(itemId, async (current) => {
        if (isDeleted(current, profile)) return 'the source deleted it: its deleted revision is the winner';
        const where = await carrier(service, itemId, partner, current);
        return where === undefined ? undefined : `${where} still carries it`;
      });
    },
    async withdrawn({ service, itemId, partner, payload }) {
      let docs: CouchDoc[];
      try {
        const entry = parse(payload);
        if (typeof entry === 'string') return false;
        docs = parseEntry(entry);
      } catch {
        return false; // not a document: nothing a retry could bring back
      }
      const winner = winningRevision(docs);
      if (!winner || isDeleted(winner, profile)) return false;
      return !(await offered(service, itemId, partner));
    },
  };
  return sink;
}

/** The Ajatus adapter, with its publisher and content-database sink (status, tests). */
export interface AjatusAdapter extends ReplicationAdapter {
  publisher: AjatusPublisher;
  sink: PartnerSink;
}

/** A running Ajatus replication. */
export type AjatusReplication = Replication<AjatusAdapter>;

/** Ajatus replication (state space 'replication'): built, not started. Throws Error for an unknown `ajatus.profile`. */
export function ajatusReplication(common: ReplicationCommon, o: AjatusOptions): AjatusReplication {
  const profile = PROFILES[o.config.profile];
  if (!profile) throw new Error(`ajatus.profile: unknown profile '${o.config.profile}' (known: ${Object.keys(PROFILES).join(', ')})`);
  return new Replication(common, { name: 'ajatus', space: 'replication', build: (ctx) => ajatusAdapter(common, o, profile, ctx) });
}

/**
 * A CouchDB client for `url`. On a loopback address the responses are asked for uncompressed
 * (nano asks for gzip, and pouchdb-server compresses): compressing there only costs CPU at both
 * ends (≈0.1 ms per replicated document at the source). Every request gives up after
 * `timeoutMs` (COUCH_REQUEST_TIMEOUT_MS): a CouchDB that never answers fails it as unreachable.
 */
export function couchClient(url: string, timeoutMs = COUCH_REQUEST_TIMEOUT_MS): ServerScope {
  const host = new URL(url).hostname;
  const loopback = host === 'localhost' || host === '[::1]' || /^127\./.test(host);
  return nano({ url, requestDefaults: { timeout: timeoutMs, ...(loopback ? { headers: { 'Accept-Encoding': 'identity' } } : {}) } });
}

/** After the sink's last write into the content database, how long its changes feed still counts as importing (ms). */
const IMPORT_QUIET_MS = 2000;

function ajatusAdapter(common: ReplicationCommon, o: AjatusOptions, profile: Profile, ctx: AdapterContext): AjatusAdapter {
  const { state, log } = ctx;
  const content: DocumentScope<unknown> = couchClient(o.couchUrl).use(o.config.contentDb);
  // pouchdb-server with a validation function loses partners' revisions silently: said at start,
  // when a design document of the content database changes, and for each target database.
  const validation = new PouchValidationCheck(log);
  const checkValidation = (db: DocumentScope<unknown>): void =>
    void validation.check(db).catch((err: unknown) => log.debug('could not look for validation functions', { db: db.config.db, reason: String(err) }));
  // Each write of the sink lets the content database's changes feed read it at once (no longpoll: see `importing` below).
  const contentSink = new CouchSink(content, state, log, { onWritten: () => source.nudge() });
  const targetSinks = new Map<string, CouchSink>();
  /** The sink for a partner: its `targetDb` from hermod:partner:<jid>, else the content database. */
  const sinkFor = (partner: string | undefined): CouchSink => {
    const target = partner === undefined ? undefined : o.settings.partner(partner).targetDb;
    if (!target || target === o.config.contentDb) return contentSink;
    let sink = targetSinks.get(target);
    if (!sink) {
      const db = couchClient(o.couchUrl).use(target);
      sink = new CouchSink(db, state, log);
      targetSinks.set(target, sink);
      checkValidation(db);
    }
    return sink;
  };
  /** The nodes to ask whether they carry a retracted item (carrierCandidates, src/replication/carriers.ts). */
  const candidates = async (service: string, partner: string | undefined, current: CouchDoc | undefined, withEarlier = true) => {
    const partners = ctx.partners();
    const target = sinkFor(partner);
    const settingsOf = (p: string | undefined) => (p === undefined ? undefined : o.settings.partner(p));
    return carrierCandidates({
      service,
      partner,
      followed: partners.followedNodes(),
      positions: await state.historyNodes(service),
      ownerOf: (s) => partners.partnerOfService(s),
      named: (p, node) => {
        const follow = settingsOf(p)?.follow;
        return follow === 'all' ? node.startsWith(TAG_PREFIX) : Array.isArray(follow) && follow.includes(node);
      },
      transformed: (p, node) => {
        const settings = settingsOf(p);
        return settings !== undefined && transformFor(settings, node) !== undefined;
      },
      sameTarget: (p) => sinkFor(p) === target,
      tagged: current ? new Set(tagsOf(current, profile).map(tagNode)) : undefined,
      // Only while some partner's discovery has not completed in this run (else none counts): a range read.
      earlier: withEarlier && partners.discoveryIncomplete() ? await state.historyServiceNodes() : [],
      recordedOwnerOf: (s) => partners.earlierOwnerOf(s),
    });
  };
  /**
   * The first of the retracting service's own candidate nodes that has the item ("service node"),
   * or undefined when none has; rejects (IqError) when none has it and one did not answer
   * (`strict`: none has it and one gave an answer nodeOffersItem does not take as final).
   */
  const ownCarrier = async (own: ReadonlyArray<readonly [string, string]>, itemId: string, strict = false): Promise<string | undefined> => {
    const partners = ctx.partners();
    const client = partners.client;
    const answers = await Promise.allSettled(own.map(([s, node]) => (strict ? nodeOffersItem(client, s, node, itemId, partners.follows(s, node)) : nodeHasItem(client, s, node, itemId))));
    const here = own.find((_, i) => answers[i]?.status === 'fulfilled' && answers[i].value);
    if (here) return `${here[0]} ${here[1]}`;
    const failed = answers.find((a) => a.status === 'rejected');
    if (failed) throw failed.reason;
    return undefined;
  };
  /** Services whose nodes followed only in an earlier run did not answer lately -> until when they are not asked again (epoch ms). */
  const silent = new Map<string, number>();
  /**
   * A node that still carries the item, among those carrierCandidates names: the retracting
   * service's own first (the first that has it), then other services writing into the same
   * database, only the nodes of the local document's tags — followed now, then (right after a
   * restart) followed in an earlier run by a service of a current partner. Every candidate of a
   * group is asked at once, one IQ each. An own node that cannot be asked fails the lookup (the
   * retraction is tried again); another service's node followed now counts as carrying it when it
   * does not answer (kept rather than deleted on a guess), one followed only earlier does not (a
   * service the partner left, or one that is down, keeps nothing for good).
   * Resolves to "service node", or undefined when none carries it.
   */
  const carrier: CarrierLookup = async (service, itemId, partner, current) => {
    const { own, others, earlier } = await candidates(service, partner, current);
    return (await ownCarrier(own, itemId)) ?? (await otherCarrier(others, earlier, itemId));
  };
  /** Of other services' nodes: followed now (no answer: carrying), then followed only earlier (carrying only on a positive answer). */
  const otherCarrier = async (others: ReadonlyArray<readonly [string, string]>, earlier: ReadonlyArray<readonly [string, string]>, itemId: string): Promise<string | undefined> => {
    const client = ctx.partners().client;
    const carries = await Promise.all(others.map(([s, node]) => nodeHasItem(client, s, node, itemId).catch(() => true)));
    const found = others.find((_, i) => carries[i]);
    if (found) return `${found[0]} ${found[1]}`;
    // A service that did not answer lately is not asked for a minute (each unanswered IQ waits
    // its timeout, and these nodes count only on a positive answer anyway).
    const now = Date.now();
    const asked = earlier.filter(([s]) => (silent.get(s) ?? 0) <= now);
    const carried = await Promise.all(
      asked.map(([s, node]) =>
        nodeHasItem(client, s, node, itemId).catch((err: unknown) => {
          if (err instanceof IqError && err.undecided) silent.set(s, Date.now() + 60_000);
          return false;
        }),
      ),
    );
    const before = asked.find((_, i) => carried[i]);
    return before ? `${before[0]} ${before[1]} (followed in an earlier run)` : undefined;
  };
  /** Whether the service itself still offers the item (couchPartnerSink's `withdrawn`): its own candidate nodes, asked strictly; none to ask rejects. */
  const offered: OfferLookup = async (service, itemId, partner) => {
    // A partner removed since: its leaves are written nowhere now (as its notifications are not).
    const who = partner ?? ctx.partners().partnerOfService(service);
    if (who === undefined || !ctx.partners().isPartner(who)) throw new Error(`${who ?? 'the partner of ' + service} is not a partner now`);
    const { own } = await candidates(service, who, undefined, false); // other services' nodes are not asked here
    if (own.length === 0) throw new Error(`no node of ${service} to ask whether it still offers ${itemId} (not followed again yet, or its partner not known or removed)`);
    return (await ownCarrier(own, itemId, true)) !== undefined;
  };
  const onContact = (doc: CouchDoc): void => {
    const jid = stringAt(doc, profile.jidPath);
    if (jid) ctx.partners().addPartner(jid);
  };
  // What the sink writes into the content database, noted for the publisher (no read back).
  const imports = new ImportNotes(profile);
  const noteImport = (docs: CouchDoc[], partner: string | undefined): void => {
    if (sinkFor(partner) === contentSink) imports.note(docs);
  };
  // Documents whose large attachment could not be uploaded wait here, and are handed over again.
  // A waiting entry is its change (~200 bytes in memory): a bulk import during an upload outage fits.
  const retries = new PublishRetries<Change>({ state, feed: `retry:couchdb:${o.config.contentDb}`, log, maxItems: 100_000 });
  const publisher = new AjatusPublisher({
    imports,
    retries,
    service: common.service,
    actor: common.componentJid,
    content,
    contentDbName: o.config.contentDb,
    state,
    settings: o.settings,
    profile,
    codec: CODECS[o.config.codec],
    inlineAttachmentMax: o.config.inlineAttachmentMax,
    uploader: new HttpUploader(common.iq, parentDomain(common.componentJid), log),
    log,
    onContact,
  });
  const source = new CouchChangesSource({
    db: content,
    feed: `couchdb:${o.config.contentDb}`,
    log,
    readAhead: (changes) => publisher.prefetch(changes),
    // Partners' documents streaming in: poll, do not longpoll (CouchChangesSource's head comment).
    importing: () => contentSink.wroteWithin(IMPORT_QUIET_MS),
  });
  let progress: Progress | undefined;
  return {
    publisher,
    sink: { ...couchPartnerSink(sinkFor, profile, log, { carrier, offered }, noteImport), close: async () => void (await Promise.all([contentSink, ...targetSinks.values()].map((s) => s.close()))) },
    transformTarget: {
      key: 'couchdb',
      format: "<json xmlns='urn:xmpp:json:0'> (a CouchDB document)",
      accepts: (root) => root.name === 'json' && root.getNS() === JSON_CONTAINER,
      write: async (root, leaf) => {
        const doc = transformedDoc(root);
        return { ref: doc._id, written: await sinkFor(leaf.partner).upsert(doc) };
      },
      // The stage calls this once no followed node carries the source item (and no local edit came since).
      remove: async (ref, leaf) => void (await sinkFor(leaf.partner).remove(ref, async () => undefined)),
    },
    settings: o.settings,
    offers: (node) => node.startsWith(TAG_PREFIX),
    discoveryIntervalSeconds: o.config.discoveryIntervalSeconds,
    digestMs: o.config.notificationDigestMs,
    packed: o.config.packedPayloads,
    liveBacklogItems: o.config.liveBacklogItems,
    feeds: [
      feed(source, async (changes) => {
        for (const c of changes) {
          if (!c.id.startsWith('_design/')) continue;
          checkValidation(content);
          break;
        }
        await publisher.handle(changes);
        progress?.add(changes.length);
      }),
      feed(retries, (changes) => publisher.retry(changes)),
    ],
    reconnected: () => retries.retryNow(),
    /** Applies tag settings (and follows their changes); a first publish of a database gets a progress log. */
    async prepare() {
      let info: { doc_count?: number; doc_del_count?: number };
      try {
        info = (await content.info()) as typeof info;
      } catch (err) {
        throw new Error(`content database ${o.config.contentDb} is not reachable: ${(err as Error).message}`);
      }
      checkValidation(content);
      o.settings.on('tag', (tag: string, settings) => {
        publisher.applyTagSettings(tag, settings).catch((err: unknown) => common.log.error('applying tag settings failed', { tag, reason: String(err) }));
      });
      for (const tag of o.settings.configuredTags()) await publisher.applyTagSettings(tag, o.settings.tag(tag));
      if ((await state.checkpoint(source.feed)) === undefined) {
        const total = (info.doc_count ?? 0) + (info.doc_del_count ?? 0); // pouchdb-server has no doc_del_count
        if (total > 0) progress = new Progress(`first publish of ${o.config.contentDb}`, total, common.log);
      }
    },
    /** Every contact with a JID in the content database is a partner. */
    async beforePartners() {
      let startkey: string | undefined;
      for (let page = 0; page < 100_000; page++) {
        const res = await content.list({ include_docs: true, limit: 500, ...(startkey ? { startkey, skip: 1 } : {}) });
        for (const row of res.rows) if (row.doc) onContact(row.doc as unknown as CouchDoc);
        if (res.rows.length < 500) break;
        startkey = res.rows.at(-1)?.id;
      }
    },
  };
}
