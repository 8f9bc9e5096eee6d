// Ajatus/CouchDB replication, wired top to bottom:
//   content db _changes -> AjatusPublisher -> pub/sub service (one node per tag)
//   partner notifications / catch-up -> PartnerManager -> CouchSink -> content db
//   app db (ajatus_db) settings -> tag node access + whitelists, partner follow lists
// The content database is both source and sink target; echoes are stopped by ReplicationState.

import path from 'node:path';
import nano, { type DocumentScope } from 'nano';
import { IqRequestError, type IqCaller } from '../component/iq-caller.ts';
import { CODECS, JSON_CONTAINER, parseEntry, type CouchDoc, type Json } from '../codecs/couch-doc.ts';
import type { AjatusConfig } from '../config/config.ts';
import type { Logger } from '../log.ts';
import type { PubsubService } from '../pubsub/service.ts';
import type { Store } from '../store/store.ts';
import { CouchSink } from '../sinks/couchdb.ts';
import { CouchChangesSource } from '../sources/couchdb-changes.ts';
import { Element } from 'ltx';
import { AjatusPublisher, TAG_PREFIX } from './ajatus-publisher.ts';
import { parentDomain } from '../config/config.ts';
import { NS } from '../xmpp/ns.ts';
import { HttpUploader } from './http-upload.ts';
import { PartnerManager, type PartnerSink } from './partners.ts';
import { Progress } from './progress.ts';
import { isDeleted, PROFILES, stringAt, type Profile } from './profile.ts';
import { transformFor, type AppSettings } from './settings.ts';
import { ReplicationState } from './state.ts';
import { TransformError } from '../transform/xslt.ts';
import type { Transforms } from './transforms.ts';

export interface AjatusReplicationOptions {
  couchUrl: string;
  config: AjatusConfig;
  settings: AppSettings;
  service: PubsubService;
  iq: IqCaller;
  componentJid: string;
  /** Holds the replication state (its state space 'replication'). */
  store: Store;
  /** Where an older Hermod kept that state (dataDir/replication, imported once). */
  dataDir: string;
  log: Logger;
  /** Per-subscription XSLT (the `transform` entry of hermod:partner:<jid>). */
  transforms?: Transforms;
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
 * Where a retracted item is still offered: the first node of `service` that this sink follows
 * and that has an item `itemId` now, or undefined when none has.
 */
export type CarrierLookup = (service: string, itemId: string, partner: string | undefined) => Promise<string | undefined>;

/** Errors after which whether a node has an item is unknown (asked again at the next retraction). */
const UNANSWERED = new Set(['remote-server-timeout', 'remote-server-not-found', 'service-unavailable', 'internal-server-error', 'resource-constraint']);

/**
 * Whether `node` of `service` has an item `itemId` now (XEP-0060 §6.5.8, items by id): true
 * when the answer carries it; false when it is empty or an error says the item (or the node)
 * is not there for us (item-not-found, forbidden, …). Throws IqRequestError when the service
 * did not answer (timeout, unreachable, internal error): then nobody knows.
 */
export async function nodeHasItem(iq: IqCaller, service: string, node: string, itemId: string): Promise<boolean> {
  const request = new Element('pubsub', { xmlns: NS.PUBSUB }).c('items', { node }).c('item', { id: itemId }).up().up();
  try {
    const res = await iq.request(service, 'get', request);
    const items = res.getChild('pubsub', NS.PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
    return items.some((i) => i.attrs.id === itemId);
  } catch (err) {
    if (err instanceof IqRequestError && !UNANSWERED.has(err.condition)) return false;
    throw err;
  }
}

/**
 * Partners' leaves into the content database (revisions kept), retractions as guarded deletions.
 * Whether a retracted document goes is decided on what the source says now, never on the tags of
 * the local copy (which are stale once the source changed them): a deletion revision of the
 * source's own (the Ajatus deleted flag; a CouchDB tombstone is not even live here) is kept as
 * the source wrote it — no revision of this site's own; else the document is deleted only when
 * no followed node of that service has the item any more (`carrier`).
 */
export function couchPartnerSink(sinkFor: (partner: string | undefined) => CouchSink, profile: Profile, log: Logger, carrier: CarrierLookup): PartnerSink {
  return {
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
      await sinkFor(partner).write(docs);
      return true;
    },
    async retract(service, _node, itemId, _followed, partner) {
      await sinkFor(partner).remove(itemId, async (current) => {
        if (isDeleted(current, profile)) return 'the source deleted it: its deleted revision is the winner';
        const node = await carrier(service, itemId, partner);
        return node === undefined ? undefined : `${service} ${node} still carries it`;
      });
    },
  };
}

export class AjatusReplication {
  readonly publisher: AjatusPublisher;
  readonly partners: PartnerManager;
  readonly sink: CouchSink;
  private readonly state: ReplicationState;
  private readonly source: CouchChangesSource;
  private readonly content: DocumentScope<unknown>;

  constructor(private readonly o: AjatusReplicationOptions) {
    const profile = PROFILES[o.config.profile];
    if (!profile) throw new Error(`ajatus.profile: unknown profile '${o.config.profile}' (known: ${Object.keys(PROFILES).join(', ')})`);
    const log = o.log.child({ component: 'ajatus' });
    this.log = log;
    this.content = nano(o.couchUrl).use(o.config.contentDb);
    this.state = new ReplicationState(o.store.state('replication'), { legacyDir: path.join(o.dataDir, 'replication'), log });
    this.sink = new CouchSink(this.content, this.state, log);
    const native = couchPartnerSink((partner) => this.sinkFor(partner), profile, log, (service, itemId, partner) => this.carrier(service, itemId, partner));
    o.transforms?.register({
      key: 'couchdb',
      format: "<json xmlns='urn:xmpp:json:0'> (a CouchDB document)",
      accepts: (root) => root.name === 'json' && root.getNS() === JSON_CONTAINER,
      write: async (root, leaf) => {
        const doc = transformedDoc(root);
        return { ref: doc._id, written: await this.sinkFor(leaf.partner).upsert(doc) };
      },
      // The stage calls this once no followed node carries the source item (and no local edit came since).
      remove: async (ref, leaf) => void (await this.sinkFor(leaf.partner).remove(ref, async () => undefined)),
    });
    const stage = o.transforms?.stage('ajatus', {
      specFor: (partner, node) => transformFor(o.settings.partner(partner), node),
      native,
      state: this.state,
      onStylesheetChange: () => this.partners.discoverSoon(),
    });
    this.partners = new PartnerManager({
      iq: o.iq,
      self: o.componentJid,
      settings: o.settings,
      sink: stage ?? native,
      ...(stage ? { mayFollow: (partner: string, node: string) => stage.mayFollow(partner, node) } : {}),
      log,
      intervalMs: o.config.discoveryIntervalSeconds * 1000,
      offers: (node) => node.startsWith(TAG_PREFIX),
      positions: this.state.historyPositions(),
    });
    const onContact = (doc: CouchDoc): void => {
      const jid = stringAt(doc, profile.jidPath);
      if (jid) this.partners.addPartner(jid);
    };
    this.publisher = new AjatusPublisher({
      service: o.service,
      actor: o.componentJid,
      content: this.content,
      contentDbName: o.config.contentDb,
      state: this.state,
      settings: o.settings,
      profile,
      codec: CODECS[o.config.codec],
      inlineAttachmentMax: o.config.inlineAttachmentMax,
      uploader: new HttpUploader(o.iq, parentDomain(o.componentJid), log),
      log,
      onContact,
    });
    this.source = new CouchChangesSource({
      db: this.content,
      feed: `couchdb:${o.config.contentDb}`,
      getCheckpoint: () => this.state.checkpoint(`couchdb:${o.config.contentDb}`),
      setCheckpoint: (seq) => this.state.setCheckpoint(`couchdb:${o.config.contentDb}`, seq),
      handle: async (changes) => {
        await this.publisher.handle(changes);
        this.progress?.add(changes.length);
      },
      log,
    });
    this.contactScan = async () => {
      let startkey: string | undefined;
      for (let page = 0; page < 100_000; page++) {
        const res = await this.content.list({ include_docs: true, limit: 500, ...(startkey ? { startkey, skip: 1 } : {}) });
        for (const row of res.rows) if (row.doc) onContact(row.doc as unknown as CouchDoc);
        if (res.rows.length < 500) break;
        startkey = res.rows.at(-1)?.id;
      }
    };
  }

  private readonly contactScan: () => Promise<void>;

  /**
   * The first node of `service` that has the item now, among the nodes this replication follows
   * for `partner` natively (no stylesheet): those followed now and those followed in an earlier
   * run (with a history position: right after a restart, discovery has not re-followed them all
   * yet while the first ones replay their history) that the partner settings still name. Every
   * such node is asked at once, one IQ each.
   */
  private async carrier(service: string, itemId: string, partner: string | undefined): Promise<string | undefined> {
    const followed = this.partners
      .subscriptions()
      .filter((s) => s.startsWith(`${service} `)) // "service node"; a JID has no space
      .map((s) => s.slice(service.length + 1));
    const settings = partner === undefined ? undefined : this.o.settings.partner(partner);
    const named = (node: string): boolean => (settings?.follow === 'all' ? node.startsWith(TAG_PREFIX) : Array.isArray(settings?.follow) && settings.follow.includes(node));
    const earlier = (await this.state.historyNodes(service)).filter((node) => !followed.includes(node) && named(node));
    const nodes = [...followed, ...earlier].filter((node) => !settings || !transformFor(settings, node));
    const has = await Promise.all(nodes.map((node) => nodeHasItem(this.o.iq, service, node, itemId)));
    return nodes.find((_, i) => has[i]);
  }

  private readonly targetSinks = new Map<string, CouchSink>();
  private readonly log: Logger;

  /** The sink for a partner: its `targetDb` from hermod:partner:<jid>, else the content database. */
  private sinkFor(partner: string | undefined): CouchSink {
    const target = partner === undefined ? undefined : this.o.settings.partner(partner).targetDb;
    if (!target || target === this.o.config.contentDb) return this.sink;
    let sink = this.targetSinks.get(target);
    if (!sink) {
      sink = new CouchSink(nano(this.o.couchUrl).use(target), this.state, this.log);
      this.targetSinks.set(target, sink);
    }
    return sink;
  }
  private progress: Progress | undefined;

  /** Opens state, applies tag settings, starts the source; partners start once online. */
  async start(): Promise<void> {
    await this.state.open();
    let info: { doc_count?: number; doc_del_count?: number };
    try {
      info = (await this.content.info()) as typeof info;
    } catch (err) {
      throw new Error(`content database ${this.o.config.contentDb} is not reachable: ${(err as Error).message}`);
    }
    this.o.settings.on('tag', (tag: string, settings) => {
      this.publisher.applyTagSettings(tag, settings).catch((err: unknown) => this.o.log.error('applying tag settings failed', { tag, reason: String(err) }));
    });
    for (const tag of this.o.settings.configuredTags()) await this.publisher.applyTagSettings(tag, this.o.settings.tag(tag));
    if ((await this.state.checkpoint(`couchdb:${this.o.config.contentDb}`)) === undefined) {
      const total = (info.doc_count ?? 0) + (info.doc_del_count ?? 0); // pouchdb-server has no doc_del_count
      if (total > 0) this.progress = new Progress(`first publish of ${this.o.config.contentDb}`, total, this.o.log);
    }
    await this.source.start();
  }

  /** Called when the component is online: find partners and subscribe. */
  async startPartners(): Promise<void> {
    await this.contactScan();
    this.partners.start();
  }

  handleEvent(message: Element): Promise<boolean> {
    return this.partners.handleEvent(message);
  }

  async stop(): Promise<void> {
    await this.partners.stop();
    await this.source.stop();
    await this.state.close();
  }
}
