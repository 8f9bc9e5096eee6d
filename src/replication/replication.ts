// One replication, whatever it replicates: the flow both adapters (Ajatus over CouchDB in
// ajatus.ts, Midgard in midgard.ts) share, wired once.
//   sources (src/sources/, each a Source) -> the adapter's publisher (codec + node mapping) ->
//   pub/sub service; the checkpoint of each batch saved in ReplicationState once published
//   partners' notifications and history -> PartnerManager -> [XSLT stage] -> the adapter's sink
// An adapter says what differs: its sources and publishers, its sink (and XSLT output target),
// its partner settings, which partner nodes it follows, and what it does before its sources
// start (restore, settings) and before discovery (a contact scan). Its state lives in the
// store's state space of its own (an older Hermod's dataDir/<space> is imported once).

import path from 'node:path';
import type { Element } from 'ltx';
import type { IqCaller } from '../component/iq-caller.ts';
import type { Logger } from '../log.ts';
import type { PartnerSink } from '../sinks/sink.ts';
import { startSource, type Source } from '../sources/source.ts';
import type { PubsubService } from '../pubsub/service.ts';
import type { Store } from '../store/store.ts';
import { PartnerManager, type PartnerSettingsSource } from './partners.ts';
import { transformFor } from './settings.ts';
import { ReplicationState } from './state.ts';
import type { SubscriptionClaims } from './subscription-claims.ts';
import type { TransformTarget, Transforms } from './transforms.ts';

/**
 * What replication uses of the pub/sub service: node set-up and access (node-access.ts) and
 * publishing. The composition root (src/app/replication.ts) hands over one whose publishMany and
 * retract resolve once their notifications are durable in the journal (a source moves its
 * checkpoint when they resolve).
 */
export type ReplicationService = Pick<PubsubService, 'configure' | 'create' | 'getAffiliations' | 'getConfig' | 'metadata' | 'publishMany' | 'retract' | 'setAffiliations'>;

/** What every replication is given by the composition root (src/app/replication.ts). */
export interface ReplicationCommon {
  /** Holds the replication state. */
  store: Store;
  /** Where the publishers publish, as `componentJid`. */
  service: ReplicationService;
  /** Where an older Hermod kept that state (dataDir/<space>, imported once). */
  dataDir: string;
  iq: IqCaller;
  componentJid: string;
  log: Logger;
  /** Per-subscription XSLT, shared by every replication. */
  transforms?: Transforms;
  /**
   * Ask partners for one copy of an item in several nodes (PartnerManagerOptions.oneCopy). Off
   * where notifications may be relayed between processes (a cluster): the relay hands them over
   * one after the other, and a notification without payload would wait for one queued behind it.
   * Default on.
   */
  oneCopy?: boolean;
  /** What the replications on this component JID use of its subscriptions at partners' services (shared by all of them). */
  claims?: SubscriptionClaims;
}

/** A source bound to the publisher of its changes (see `feed`). */
export interface Feed {
  start(state: ReplicationState): Promise<void>;
  stop(): Promise<void>;
}

/** Binds a source to what publishes its batches; its checkpoint is kept in the replication state. */
export function feed<C>(source: Source<C>, publish: (changes: C[]) => Promise<void>): Feed {
  return { start: (state) => startSource(source, state, publish), stop: () => source.stop() };
}

/** What a replication is built with: its state and log, and its partner manager once built. */
export interface AdapterContext {
  readonly state: ReplicationState;
  readonly log: Logger;
  /** The partner manager (built right after the adapter: call it from callbacks only). */
  partners(): PartnerManager;
}

/** What one kind of replication brings (see the header). */
export interface ReplicationAdapter {
  /** Its sources, each with its publisher; started in this order, stopped in reverse. */
  feeds: Feed[];
  /** Writes partners' leaves and applies their retractions. */
  sink: PartnerSink;
  /** Where XSLT output of this kind is written (registered with the shared transforms). */
  transformTarget?: TransformTarget;
  /** Which partners follow what (and with which stylesheet). */
  settings: PartnerSettingsSource;
  /** Whether a partner's node is one this replication follows by default. */
  offers(node: string): boolean;
  discoveryIntervalSeconds: number;
  /** pubsub#digest_frequency (ms) asked of partners' services; 0: no digests (PartnerManagerOptions.digestMs). */
  digestMs?: number;
  /** Live items waiting for the sink before notifications are left to the history (PartnerManagerOptions.liveBacklogItems). */
  liveBacklogItems?: number;
  /** Ask partners' services for packed payloads (PartnerManagerOptions.packed). Default on. */
  packed?: boolean;
  /** Runs after the state is open, before the sources start. Throws to fail the start. */
  prepare?(): Promise<void>;
  /** Runs once online, before partner discovery. */
  beforePartners?(): Promise<void>;
  /** Called each time the component is online again (after a lost connection too): work waiting for the server may go now. */
  reconnected?(): void;
}

export interface ReplicationSpec<A extends ReplicationAdapter> {
  /** Its name in logs and for the XSLT stage: 'ajatus', 'midgard'. */
  name: string;
  /** Its state space in the store (and an older Hermod's directory under dataDir). */
  space: string;
  build(ctx: AdapterContext): A;
}

export class Replication<A extends ReplicationAdapter = ReplicationAdapter> {
  readonly state: ReplicationState;
  readonly partners: PartnerManager;
  readonly adapter: A;
  private readonly log: Logger;
  private started: Feed[] = [];

  constructor(common: ReplicationCommon, spec: ReplicationSpec<A>) {
    const log = (this.log = common.log.child({ component: spec.name }));
    this.state = new ReplicationState(common.store.state(spec.space), { legacyDir: path.join(common.dataDir, spec.space), log });
    const adapter = (this.adapter = spec.build({ state: this.state, log, partners: () => this.partners }));
    if (adapter.transformTarget) common.transforms?.register(adapter.transformTarget);
    const stage = common.transforms?.stage(spec.name, {
      specFor: (partner, node) => transformFor(adapter.settings.partner(partner), node),
      native: adapter.sink,
      state: this.state,
      onStylesheetChange: () => this.partners.discoverSoon(),
    });
    this.partners = new PartnerManager({
      iq: common.iq,
      self: common.componentJid,
      settings: adapter.settings,
      sink: stage ?? adapter.sink,
      ...(stage ? { mayFollow: (partner: string, node: string) => stage.mayFollow(partner, node) } : {}),
      log,
      intervalMs: adapter.discoveryIntervalSeconds * 1000,
      ...(adapter.digestMs !== undefined ? { digestMs: adapter.digestMs } : {}),
      ...(adapter.liveBacklogItems !== undefined ? { liveBacklogItems: adapter.liveBacklogItems } : {}),
      ...(adapter.packed !== undefined ? { packed: adapter.packed } : {}),
      offers: (node) => adapter.offers(node),
      // Nodes without a stylesheet of their own are all written alike: one copy of an item in several is enough.
      oneCopy: (partner, node) => common.oneCopy !== false && partner !== undefined && transformFor(adapter.settings.partner(partner), node) === undefined,
      // A restart replays the nodes' history from what was last applied.
      positions: this.state.historyPositions(),
      owners: { load: () => this.state.serviceOwners(), set: (service, partner) => this.state.setServiceOwner(service, partner) },
      ...(common.claims ? { claims: common.claims } : {}),
    });
  }

  /**
   * Starts the replication: opens the state, prepares the adapter, starts its sources (each from
   * its checkpoint); once `online` resolves, the adapter's pre-discovery step and partner
   * discovery. Rejects with what opening, preparing or a source's start threw (what started is
   * stopped by stop()).
   */
  async start(online: Promise<void>): Promise<void> {
    await this.state.open();
    await this.adapter.prepare?.();
    for (const f of this.adapter.feeds) {
      this.started.push(f);
      await f.start(this.state);
    }
    void online
      .then(async () => {
        await this.adapter.beforePartners?.();
        this.partners.start();
      })
      .catch((err: unknown) => this.log.error('partner discovery could not start', { reason: String(err) }));
  }

  /** The component is online (again): see ReplicationAdapter.reconnected. */
  reconnected(): void {
    this.adapter.reconnected?.();
  }

  /** A partner's pub/sub event (or history result); false when it is not this replication's. */
  handleEvent(message: Element): Promise<boolean> {
    return this.partners.handleEvent(message);
  }

  /** Stops partners, lets the sink write what it holds, then stops the sources (last started first), then forgets the state's cache. */
  async stop(): Promise<void> {
    await this.partners.stop();
    await this.adapter.sink.close?.();
    for (const f of this.started.reverse()) await f.stop();
    this.started = [];
    await this.state.close();
  }
}
