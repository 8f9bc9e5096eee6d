// The Midgard adapter, run by the shared replication (replication.ts):
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
import { Element } from 'ltx';
import { buildMidgardEntry, MIDGARD_NS, MidgardFormatError, readMidgardElement } from '../codecs/midgard.ts';
import { parentDomain } from '../config/config.ts';
import type { MidgardConfig } from '../config/midgard-config.ts';
import { PubsubError } from '../pubsub/errors.ts';
import { MidgardSpoolSink } from '../sinks/midgard-spool.ts';
import { dbusPath, MidgardDbusSource, type NotifiedSignal } from '../sources/midgard-dbus.ts';
import { MidgardSpoolSource, SpoolBatchError } from '../sources/midgard-spool.ts';
import { TransformError } from '../transform/xslt.ts';
import { TopicIndex, type MidgardNodeMapping } from './midgard-mapping.ts';
import { HttpUploader, Offloader } from './http-upload.ts';
import { BlobUploadError, MidgardPublisher, objectKey, objectVersions, type MidgardInput, type MidgardOutcome } from './midgard-publisher.ts';
import { KeyedMutex } from '../util/mutex.ts';
import { PublishRetries } from './publish-retries.ts';
import type { NodeAccess } from './node-access.ts';
import { feed, Replication, type AdapterContext, type ReplicationAdapter, type ReplicationCommon } from './replication.ts';
import { DEFAULT_PARTNER_SETTINGS, DEFAULT_TAG_SETTINGS, type PartnerSettings } from './settings.ts';

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

/** The Midgard adapter, with its publisher, spool sink and topic tree (status, tests). */
export interface MidgardAdapter extends ReplicationAdapter {
  publisher: MidgardPublisher;
  sink: MidgardSpoolSink;
  index: TopicIndex;
}

/** A running Midgard replication. */
export type MidgardReplication = Replication<MidgardAdapter>;

/**
 * What follows a batch of D-Bus documents (`failed`: index -> error of those that failed):
 * one that failed for good goes to `skip`; one that may pass waits in `waiting` (by the GUID of
 * its object, replacing an older document of that object waiting there; not kept beyond the
 * bounds: skipped); one that was handled — published, or found unchanged, an echo of a partner's
 * version, a deletion — ends the waits of the objects it carries that it is not older than
 * (endOlderWaits: the older version must not follow it), as does a waiting document's failure
 * for good. A read (action `get`) decides nothing of the object: it ends no wait, and one that
 * failed is skipped.
 */
export function settleSignals(
  inputs: MidgardInput[],
  failed: ReadonlyMap<number, unknown>,
  o: { waiting: PublishRetries<MidgardInput>; isPermanent: (err: unknown) => boolean; skip: (i: number, reason: string) => void },
): void {
  for (const [i, input] of inputs.entries()) {
    if (!failed.has(i)) {
      if (input.origin.action !== 'get') endOlderWaits(o.waiting, input);
      continue;
    }
    const error = failed.get(i);
    const reason = error instanceof Error ? error.message : String(error);
    const key = objectKey(input.text);
    // A read that failed publishes nothing when tried again, and must not replace a waiting version.
    if (input.origin.action === 'get') o.skip(i, reason);
    else if (o.isPermanent(error) || key === undefined) {
      o.skip(i, reason);
      if (key !== undefined) o.waiting.succeeded(undefined, key, false); // refused for good: not tried again
    } else if (!o.waiting.failed(undefined, key, reason, input)) o.skip(i, reason);
  }
}

/**
 * A document was handled: the waits of the objects it carries end where the waiting version is
 * not newer (metadata/revised). Where either has no revised date, only a D-Bus document ends the
 * wait: signals come in the order of the edits, spool files do not (a file tried again later, or
 * again after a crash). Costs nothing while nothing waits (then each handled document is parsed
 * once more).
 */
export function endOlderWaits(waiting: PublishRetries<MidgardInput>, handled: MidgardInput): void {
  if (waiting.size === 0) return;
  for (const [guid, revised] of objectVersions(handled.text)) {
    const item = waiting.item(guid);
    if (item === undefined) continue;
    const waited = objectVersions(item.text).get(guid);
    const newer = revised === undefined || waited === undefined ? handled.origin.source === 'dbus' : revised >= waited;
    if (newer) waiting.succeeded(undefined, guid);
  }
}

/** Midgard replication (state space 'midgard'): built, not started. */
export function midgardReplication(common: ReplicationCommon, config: MidgardConfig): MidgardReplication {
  return new Replication(common, { name: 'midgard', space: 'midgard', build: (ctx) => midgardAdapter(common, config, ctx) });
}

function midgardAdapter(common: ReplicationCommon, config: MidgardConfig, ctx: AdapterContext): MidgardAdapter {
  const { state, log } = ctx;
  const index = new TopicIndex();
  const mapping: MidgardNodeMapping = { ...config.nodes, paths: config.nodes.paths.map((p) => ({ node: p.node, regexp: new RegExp(p.regexp) })) };
  const access = (node: string): NodeAccess => config.access[node] ?? config.access['*'] ?? DEFAULT_TAG_SETTINGS;
  const follow = config.follow.map((re) => new RegExp(re));
  const dbus = config.bus === 'none' ? undefined : new MidgardDbusSource({ bus: config.bus, log });
  const sink = new MidgardSpoolSink({ dir: config.inbound, state, log, onWritten: (file) => void dbus?.emitSpoolWritten(file) });
  const publisher = new MidgardPublisher({
    service: common.service,
    actor: common.componentJid,
    state,
    mapping,
    access,
    index,
    partnerJid: config.partnerJid,
    log,
    onPartner: (jid) => ctx.partners().addPartner(jid),
    onPartnerGone: (jid) => {
      if (config.partners.includes(jid)) {
        log.info('partner kept: it is listed in midgard.partners', { jid });
        return;
      }
      // Not awaited: the partner manager first lets a discovery under way finish.
      ctx.partners().removePartner(jid).catch((err: unknown) => log.error('ending a partnership failed', { jid, reason: String(err) }));
    },
    inlineBlobMax: config.inlineBlobMax,
    offloader: new Offloader(new HttpUploader(common.iq, parentDomain(common.componentJid), log), state, log, 'midgard.inlineBlobMax'),
  });
  // A bad document, one the service refuses (e.g. payload-too-big) or one whose blob the upload
  // service refused for good (UploadRefused) would fail the same way again; a service error of the
  // server's own (internal-server-error: a cluster node lock lost, LockLostError, "nothing
  // written, try again"), a blob upload that got no answer or the store failing may pass, and is
  // tried again.
  const isPermanent = (err: unknown): boolean =>
    err instanceof MidgardFormatError || (err instanceof BlobUploadError && err.refused) || (err instanceof PubsubError && err.condition !== 'internal-server-error');
  const spool = config.spool ? new MidgardSpoolSource({ dir: config.spool, log, isPermanent }) : undefined;
  // D-Bus documents that failed for a reason that may pass wait here (in memory: signals are not
  // replayed) and are published again, unless a later signal of the object was published first.
  // A document's text (inline blobs included) is what waits: bounded in bytes.
  const waiting = new PublishRetries<MidgardInput>({ feed: 'retry:midgard-dbus', log, size: (input) => input.text.length });
  // The D-Bus documents, their retries and the spool take turns, so that a retry handed over is
  // checked, published and settled with no other batch in between (an older version never
  // follows a newer).
  const dbusTurns = new KeyedMutex();
  /**
   * Publishes a batch (MidgardPublisher.handleBatch: pipelined, order per object and node kept),
   * then writes the batch's records in one store write (also when it failed part way). D-Bus
   * (with `skip`): settleSignals. Spool files handled end the waits of D-Bus documents they are
   * not older than (endOlderWaits). Spool (no `skip`): rejects with a SpoolBatchError naming the files that failed;
   * the spool source keeps them (or moves them to failed/).
   */
  const publishBatch = async (inputs: MidgardInput[], skip?: (i: number, reason: string) => void): Promise<void> => {
    try {
      let outcomes: MidgardOutcome[];
      try {
        outcomes = await publisher.handleBatch(inputs);
      } catch (error) {
        // The batch as a whole (the store's read failing): with `skip`, each document may pass.
        if (!skip) throw error;
        outcomes = inputs.map(() => ({ error }));
      }
      const failed = new Map(outcomes.flatMap((outcome, i) => (outcome === 'done' ? [] : [[i, outcome.error] as const])));
      if (skip) return settleSignals(inputs, failed, { waiting, isPermanent, skip });
      // Spool files handled end the waits of their objects' older D-Bus documents too.
      for (const [i, input] of inputs.entries()) if (!failed.has(i)) endOlderWaits(waiting, input);
      if (failed.size > 0) throw new SpoolBatchError(failed);
    } finally {
      await publisher.flush();
    }
  };
  const feeds = [];
  if (dbus) {
    feeds.push(
      feed(dbus, (signals) =>
        dbusTurns.run('', () =>
          publishBatch(
            signals.map((s) => ({ text: s.text, origin: { source: 'dbus', area: s.area, action: s.action } })),
            (i, reason) => log.warn('D-Bus signal skipped', { reason, path: dbusPath(signals[i] as NotifiedSignal) }),
          ),
        ),
      ),
      // Only what still waits as it was handed over (not ended or replaced by a later signal meanwhile).
      feed(waiting, (handed) =>
        dbusTurns.run('', () => {
          const inputs = handed.filter((input) => waiting.holds(objectKey(input.text) ?? input.text, input));
          return publishBatch(inputs, (i, reason) => log.warn('D-Bus document dropped after failed attempts', { reason, ...inputs[i]?.origin }));
        }),
      ),
    );
  }
  if (spool) feeds.push(feed(spool, (files) => dbusTurns.run('', () => publishBatch(files.map(({ text }) => ({ text, origin: { source: 'spool' } }))))));
  return {
    publisher,
    sink,
    index,
    feeds,
    reconnected: () => waiting.retryNow(),
    transformTarget: {
      key: 'midgard',
      format: `<midgard_object xmlns='${MIDGARD_NS}'> (for the inbound spool)`,
      accepts: (root) => root.name === 'midgard_object' && root.getNS() === MIDGARD_NS,
      write: async (root, leaf) => {
        // An output that is not a Midgard object we can write is the stylesheet's fault (quarantined).
        let doc: ReturnType<typeof readMidgardElement>;
        try {
          doc = readMidgardElement(root);
        } catch (err) {
          throw err instanceof MidgardFormatError ? new TransformError(`the <midgard_object> output: ${err.message}`) : err;
        }
        const guid = doc.main?.guid;
        if (!guid) throw new TransformError('the <midgard_object> output has no main object');
        // Through the sink's own checks and the importer's rule (a stale version is not written).
        const item = new Element('item', { id: guid }).cnode(buildMidgardEntry(doc)).up();
        return { ref: guid, written: await sink.writeItem(leaf.service, leaf.node, item) };
      },
      // A deletion travels as the tombstone leaf the source publishes before retracting.
      remove: async () => undefined,
    },
    settings: new ConfigPartnerSettings(config),
    offers: (node) => follow.some((re) => re.test(node)),
    discoveryIntervalSeconds: config.discoveryIntervalSeconds,
    digestMs: config.notificationDigestMs,
    packed: config.packedPayloads,
    liveBacklogItems: config.liveBacklogItems,
    /** Restores the publisher, loads the topic tree, names the configured partners, opens the inbound spool. */
    async prepare() {
      await publisher.restore();
      if (config.topicsExport) {
        let text: string;
        try {
          text = await readFile(config.topicsExport, 'utf8');
        } catch (err) {
          throw new Error(`midgard.topicsExport: cannot read ${config.topicsExport}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
        }
        const n = index.loadExport(text);
        log.info('topic tree loaded from export', { file: config.topicsExport, topics: n });
      }
      for (const jid of config.partners) ctx.partners().addPartner(jid);
      await sink.start();
    },
  };
}
