// Midgard replication, wired top to bottom:
//   D-Bus Notified signals / spool files -> MidgardPublisher -> pub/sub service (class, approved,
//   sitegroup and path nodes)
//   partner notifications / catch-up -> PartnerManager (shared with Ajatus) -> MidgardSpoolSink
//   -> inbound spool for Midgard's importer (+ a D-Bus signal per file)
//   config file `midgard.access` -> node access + whitelists; partners from midgard_person JIDs
//   (a person deleted, or its JID removed, ends the partnership: its nodes are unsubscribed)
//   blobs beyond `midgard.inlineBlobMax` -> XEP-0363 upload on the attached server (shared with
//   Ajatus, http-upload.ts); the sink downloads and verifies them before writing the spool file
// Echoes (the importer re-emitting what Hermod delivered) are stopped by the versions recorded
// in ReplicationState (the store's state space 'midgard').

import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Element } from 'ltx';
import { buildMidgardEntry, MIDGARD_NS, MidgardFormatError, readMidgardElement } from '../codecs/midgard.ts';
import type { IqCaller } from '../component/iq-caller.ts';
import { parentDomain } from '../config/config.ts';
import type { MidgardConfig } from '../config/midgard-config.ts';
import type { Logger } from '../log.ts';
import { PubsubError } from '../pubsub/errors.ts';
import type { PubsubService } from '../pubsub/service.ts';
import type { Store } from '../store/store.ts';
import { MidgardSpoolSink } from '../sinks/midgard-spool.ts';
import { MidgardDbusSource } from '../sources/midgard-dbus.ts';
import { MidgardSpoolSource } from '../sources/midgard-spool.ts';
import { TopicIndex, type MidgardNodeMapping } from './midgard-mapping.ts';
import { HttpUploader, Offloader } from './http-upload.ts';
import { MidgardPublisher } from './midgard-publisher.ts';
import type { NodeAccess } from './node-access.ts';
import { PartnerManager } from './partners.ts';
import { DEFAULT_PARTNER_SETTINGS, DEFAULT_TAG_SETTINGS, transformFor, type PartnerSettings } from './settings.ts';
import type { Transforms } from './transforms.ts';
import { ReplicationState } from './state.ts';

export interface MidgardReplicationOptions {
  config: MidgardConfig;
  service: PubsubService;
  iq: IqCaller;
  componentJid: string;
  /** Holds the replication state (its state space 'midgard'). */
  store: Store;
  /** Where an older Hermod kept that state (dataDir/midgard, imported once). */
  dataDir: string;
  log: Logger;
  /** Per-subscription XSLT (the `transform` of object entries in `midgard.partners`). */
  transforms?: Transforms;
}

/**
 * Partner settings of the Midgard adapter, from the config file: a partner follows the nodes its
 * `midgard.partners` entry lists, else those matching `midgard.follow`.
 */
class ConfigPartnerSettings extends EventEmitter {
  constructor(private readonly config: MidgardConfig) {
    super();
  }

  partner(jid: string): PartnerSettings {
    const own = this.config.partnerSettings[jid];
    return own ? { follow: own.follow ?? 'all', ...(own.transform ? { transform: own.transform } : {}) } : DEFAULT_PARTNER_SETTINGS;
  }
}

export class MidgardReplication {
  readonly publisher: MidgardPublisher;
  readonly partners: PartnerManager;
  readonly sink: MidgardSpoolSink;
  readonly index = new TopicIndex();
  private readonly state: ReplicationState;
  private readonly dbus: MidgardDbusSource | undefined;
  private readonly spool: MidgardSpoolSource | undefined;
  private readonly log: Logger;

  constructor(private readonly o: MidgardReplicationOptions) {
    const { config } = o;
    const log = (this.log = o.log.child({ component: 'midgard' }));
    this.state = new ReplicationState(o.store.state('midgard'), { legacyDir: path.join(o.dataDir, 'midgard'), log });
    const mapping: MidgardNodeMapping = { ...config.nodes, paths: config.nodes.paths.map((p) => ({ node: p.node, regexp: new RegExp(p.regexp) })) };
    const access = (node: string): NodeAccess => config.access[node] ?? config.access['*'] ?? DEFAULT_TAG_SETTINGS;
    const follow = config.follow.map((re) => new RegExp(re));
    this.dbus = config.bus === 'none' ? undefined : new MidgardDbusSource({ bus: config.bus, log, handle: (signal) => this.publisher.handle(signal.text, { source: 'dbus', area: signal.area, action: signal.action }) });
    this.sink = new MidgardSpoolSink({ dir: config.inbound, state: this.state, log, onWritten: (file) => void this.dbus?.emitSpoolWritten(file) });
    const settings = new ConfigPartnerSettings(config);
    o.transforms?.register({
      key: 'midgard',
      format: `<midgard_object xmlns='${MIDGARD_NS}'> (for the inbound spool)`,
      accepts: (root) => root.name === 'midgard_object' && root.getNS() === MIDGARD_NS,
      write: async (root, leaf) => {
        const doc = readMidgardElement(root); // MidgardFormatError names what is wrong
        const guid = doc.main?.guid;
        if (!guid) throw new MidgardFormatError('the <midgard_object> output has no main object');
        // Through the sink's own checks and the importer's rule (a stale version is not written).
        const item = new Element('item', { id: guid }).cnode(buildMidgardEntry(doc)).up();
        return { ref: guid, written: await this.sink.writeItem(leaf.service, leaf.node, item) };
      },
      // A deletion travels as the tombstone leaf the source publishes before retracting.
      remove: async () => undefined,
    });
    const stage = o.transforms?.stage('midgard', {
      specFor: (partner, node) => transformFor(settings.partner(partner), node),
      native: this.sink,
      state: this.state,
      onStylesheetChange: () => this.partners.discoverSoon(),
    });
    this.partners = new PartnerManager({
      iq: o.iq,
      self: o.componentJid,
      settings,
      sink: stage ?? this.sink,
      ...(stage ? { mayFollow: (partner: string, node: string) => stage.mayFollow(partner, node) } : {}),
      log,
      intervalMs: config.discoveryIntervalSeconds * 1000,
      offers: (node) => follow.some((re) => re.test(node)),
      // As for Ajatus: a restart replays the nodes' history from what was last applied.
      positions: this.state.historyPositions(),
    });
    this.publisher = new MidgardPublisher({
      service: o.service,
      actor: o.componentJid,
      state: this.state,
      mapping,
      access,
      index: this.index,
      partnerJid: config.partnerJid,
      log,
      onPartner: (jid) => this.partners.addPartner(jid),
      onPartnerGone: (jid) => {
        if (config.partners.includes(jid)) {
          log.info('partner kept: it is listed in midgard.partners', { jid });
          return;
        }
        // Not awaited: the partner manager first lets a discovery under way finish.
        this.partners.removePartner(jid).catch((err: unknown) => log.error('ending a partnership failed', { jid, reason: String(err) }));
      },
      inlineBlobMax: config.inlineBlobMax,
      offloader: new Offloader(new HttpUploader(o.iq, parentDomain(o.componentJid), log), this.state, log, 'midgard.inlineBlobMax'),
    });
    this.spool = config.spool
      ? new MidgardSpoolSource({
          dir: config.spool,
          log,
          // A bad document, or one the service refuses (e.g. payload-too-big), would fail the same way again.
          isPermanent: (err) => err instanceof MidgardFormatError || err instanceof PubsubError,
          handle: (text) => this.publisher.handle(text, { source: 'spool' }),
        })
      : undefined;
  }

  /** Opens state, loads the topic tree, starts the sources; partners start once online. */
  async start(): Promise<void> {
    const { config } = this.o;
    await this.state.open();
    await this.publisher.restore();
    if (config.topicsExport) {
      let text: string;
      try {
        text = await readFile(config.topicsExport, 'utf8');
      } catch (err) {
        throw new Error(`midgard.topicsExport: cannot read ${config.topicsExport}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      const n = this.index.loadExport(text);
      this.log.info('topic tree loaded from export', { file: config.topicsExport, topics: n });
    }
    for (const jid of config.partners) this.partners.addPartner(jid);
    await this.sink.start();
    this.dbus?.start();
    await this.spool?.start();
  }

  /** Called when the component is online: find partners and subscribe. */
  startPartners(): void {
    this.partners.start();
  }

  handleEvent(message: Element): Promise<boolean> {
    return this.partners.handleEvent(message);
  }

  async stop(): Promise<void> {
    await this.partners.stop();
    await this.spool?.stop();
    await this.dbus?.stop();
    await this.state.close();
  }
}
