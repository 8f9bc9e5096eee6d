// Ajatus/CouchDB replication, wired top to bottom:
//   content db _changes -> AjatusPublisher -> pub/sub service (one node per tag)
//   partner notifications / catch-up -> PartnerManager -> CouchSink -> content db
//   app db (ajatus_db) settings -> tag node access + whitelists, partner follow lists
// The content database is both source and sink target; echoes are stopped by ReplicationState.

import path from 'node:path';
import nano, { type DocumentScope } from 'nano';
import type { IqCaller } from '../component/iq-caller.ts';
import { CODECS, JSON_CONTAINER, parseEntry, type CouchDoc, type Json } from '../codecs/couch-doc.ts';
import type { AjatusConfig } from '../config/config.ts';
import type { Logger } from '../log.ts';
import type { PubsubService } from '../pubsub/service.ts';
import { CouchSink } from '../sinks/couchdb.ts';
import { CouchChangesSource } from '../sources/couchdb-changes.ts';
import type { Element } from 'ltx';
import { AjatusPublisher, TAG_PREFIX, tagNode } from './ajatus-publisher.ts';
import { parentDomain } from '../config/config.ts';
import { HttpUploader } from './http-upload.ts';
import { PartnerManager, type PartnerSink } from './partners.ts';
import { Progress } from './progress.ts';
import { PROFILES, stringAt, tagsOf, type Profile } from './profile.ts';
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

/** Partners' leaves into the content database (revisions kept), retractions as guarded deletions. */
export function couchPartnerSink(sinkFor: (partner: string | undefined) => CouchSink, profile: Profile, log: Logger): PartnerSink {
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
    async retract(_service, _node, itemId, followed, partner) {
      // Kept when the document's tags put it on another followed node of that service.
      await sinkFor(partner).remove(itemId, (doc) => tagsOf(doc, profile).some((tag) => followed(tagNode(tag))));
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
    this.state = new ReplicationState(path.join(o.dataDir, 'replication'));
    this.sink = new CouchSink(this.content, this.state, log);
    const native = couchPartnerSink((partner) => this.sinkFor(partner), profile, log);
    o.transforms?.register({
      key: 'couchdb',
      format: "<json xmlns='urn:xmpp:json:0'> (a CouchDB document)",
      accepts: (root) => root.name === 'json' && root.getNS() === JSON_CONTAINER,
      write: async (root, leaf) => {
        const doc = transformedDoc(root);
        return { ref: doc._id, written: await this.sinkFor(leaf.partner).upsert(doc) };
      },
      // Deleted when no followed node carries the source item any more (and no local edit came since).
      remove: async (ref, leaf) => void (await this.sinkFor(leaf.partner).remove(ref, () => false)),
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
