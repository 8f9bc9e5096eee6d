// Per-subscription XSLT between a partner's leaves and the local sinks (the seed: "XSLT
// transformations before content is unserialized into the system, configurable per
// subscription"). A subscription (partner + node) that names a stylesheet has its leaves'
// payloads transformed; the output's root element picks the local target that writes it
// (a CouchDB document as an XEP-0335 <json/>, a <midgard_object/> for the inbound spool).
// Subscriptions without a stylesheet go straight to the adapter's own sink.
//
// Stylesheets are compiled once per content (SEF cache in XsltEngine) and re-checked by mtime;
// one that does not compile pauses its subscription (PartnerManager does not follow the node)
// with the file, line and message in the log, and resumes when the file is fixed. A leaf whose
// transform fails, or that the local database refuses for itself (RefusedWrite, with or without
// a stylesheet), is never lost: it goes to the quarantine with the reason, counts as handled (the
// node's history position moves past it), and `hermod quarantine retry` runs it again here. A
// write that fails in a way that may pass (the database down) is not quarantined: it rejects, and
// the partner manager applies it again by itself.

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Element, parse } from 'ltx';
import type { TransformSpec } from '../config/transform-spec.ts';
import type { Logger } from '../log.ts';
import { Quarantine, type QuarantineEntry } from '../transform/quarantine.ts';
import { StylesheetError, TransformError, TransformInterrupted, XsltEngine, type CompiledStylesheet } from '../transform/xslt.ts';
import { RefusedWrite, writeLeaves, writeTogether, type PartnerLeaf, type PartnerSink } from '../sinks/sink.ts';
import { KeyedMutex } from '../util/mutex.ts';
import type { ReplicationState } from './state.ts';

/** The stylesheets shipped with Hermod (found by bare name when not in the configured folder). */
export const SHIPPED_STYLESHEETS = fileURLToPath(new URL('../../stylesheets/', import.meta.url));

/** Where a leaf came from: what the stylesheet is told and what a quarantine entry records. */
export interface Leaf {
  /** Which replication received it ('ajatus', 'midgard'). */
  adapter: string;
  partner: string | undefined;
  service: string;
  node: string;
  itemId: string;
  publisher: string | undefined;
}

/** A local sink for one output format of transforms. */
export interface TransformTarget {
  /** Stable name, recorded with what it wrote. */
  readonly key: string;
  /** For messages: the output it takes, e.g. `<json xmlns='urn:xmpp:json:0'>` (a CouchDB document). */
  readonly format: string;
  accepts(root: Element): boolean;
  /**
   * Writes the output; `ref` names what was written (for a retraction), `written` is false when
   * it was current already. Rejects with TransformError when the output is not one it can write
   * (no `_id`, no main object, …: the leaf is quarantined), RefusedWrite when the database
   * refuses it (quarantined), anything else when trying again may help (the database down).
   */
  write(root: Element, leaf: Leaf): Promise<{ ref: string; written: boolean }>;
  /** The source item left every followed node: undo what `ref` names. */
  remove(ref: string, leaf: Leaf): Promise<void>;
}

export interface TransformsOptions {
  /** Folder relative stylesheet paths resolve against (then the shipped stylesheets). */
  dir: string;
  /** Where failed leaves are kept (the store's, src/transform/quarantine.ts). */
  quarantine: Quarantine;
  log: Logger;
  timeoutMs: number;
  maxOutput: number;
  /** How often the quarantine's retry marks and the stylesheets in use are checked. */
  pollMs?: number;
}

export interface StageOptions {
  /** The stylesheet for a partner's node, if that subscription has one. */
  specFor: (partner: string, node: string) => TransformSpec | undefined;
  /** The adapter's own sink, for subscriptions without a stylesheet. */
  native: PartnerSink;
  /** Where what transformed leaves became is remembered (for retractions). */
  state: ReplicationState;
  /** Called when a stylesheet in use changed (e.g. discovery again, to pause or resume). */
  onStylesheetChange: () => void;
}

/** Whether a quarantined leaf is withdrawn cannot be told now (PartnerSink.withdrawn rejected). */
class NotKnown extends Error {}

/** A retried quarantined leaf whose write failed in a way that may pass (run(): the database down). */
class RetryLater extends Error {}

/**
 * A `hermod quarantine retry` that could not decide (whether the partner still offers the item
 * not known yet — at start partners are added only once online —, the database down): the mark
 * stays and it is tried again after RETRY_LATER_FIRST_MS, doubling, up to RETRY_LATER_TRIES
 * times (~5 min); then it goes back to the quarantine with the reason, as a decided failure does.
 */
const RETRY_LATER_FIRST_MS = 5_000;
const RETRY_LATER_TRIES = 6;

/** What a transformed item became, per source item; `nodes` are the followed nodes that carried it. */
interface Written {
  target: string;
  ref: string;
  nodes: string[];
}

/**
 * The write of a transform's output failed in a way that may pass (the database or the spool
 * unavailable; not RefusedWrite): the leaf is applied again by the partner manager, not
 * quarantined. `cause` is the sink's error.
 */
export class OutputWriteFailed extends Error {
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'OutputWriteFailed';
  }
}

/** A stable 32-hex-digit id derived from an item id (usable as a Midgard GUID). */
export const itemGuid = (itemId: string): string => createHash('md5').update(itemId).digest('hex');

export class Transforms {
  readonly engine: XsltEngine;
  readonly quarantine: Quarantine;
  private readonly targets: TransformTarget[] = [];
  private readonly stages = new Map<string, TransformStage>();
  /** Stylesheet file -> its compilation as of the file's mtime and size. */
  private readonly compiled = new Map<string, { stamp: string; result: CompiledStylesheet | StylesheetError }>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;

  constructor(private readonly o: TransformsOptions) {
    this.engine = new XsltEngine({ timeoutMs: o.timeoutMs, maxOutput: o.maxOutput });
    this.quarantine = o.quarantine;
  }

  register(target: TransformTarget): void {
    this.targets.push(target);
  }

  stage(adapter: string, options: StageOptions): TransformStage {
    const stage = new TransformStage(this, adapter, options, this.o.log);
    this.stages.set(adapter, stage);
    return stage;
  }

  /** The stylesheet file a spec names: absolute, in the transforms folder, else a shipped one. */
  resolve(stylesheet: string): string {
    if (path.isAbsolute(stylesheet)) return stylesheet;
    const local = path.resolve(this.o.dir, stylesheet);
    if (existsSync(local)) return local;
    const shipped = path.resolve(SHIPPED_STYLESHEETS, stylesheet);
    return path.dirname(shipped) === path.resolve(SHIPPED_STYLESHEETS) && existsSync(shipped) ? shipped : local;
  }

  /** Compiles the stylesheet (again only when the file changed); throws StylesheetError. */
  async compile(file: string): Promise<CompiledStylesheet> {
    const stamp = await stat(file).then(
      (s) => `${s.mtimeMs}:${s.size}`,
      () => 'missing',
    );
    let entry = this.compiled.get(file);
    if (!entry || entry.stamp !== stamp) {
      const result = await this.engine.compile(file).catch((err: unknown) => {
        if (err instanceof StylesheetError) return err;
        throw err;
      });
      entry = { stamp, result };
      this.compiled.set(file, entry);
      if (result instanceof StylesheetError) this.o.log.error('stylesheet does not compile', { stylesheet: file, line: result.line, error: result.detail });
      else this.o.log.info('stylesheet compiled', { stylesheet: file });
    }
    if (entry.result instanceof StylesheetError) throw entry.result;
    return entry.result;
  }

  /** Runs a spec's stylesheet on a leaf's payload and hands the output to the target that takes it. */
  async apply(leaf: Leaf, payload: string, spec: TransformSpec): Promise<{ target: TransformTarget; ref: string; written: boolean }> {
    const sheet = await this.compile(this.resolve(spec.stylesheet));
    const params = { ...spec.params, partner: leaf.partner ?? '', node: leaf.node, 'item-id': leaf.itemId, 'item-guid': itemGuid(leaf.itemId), publisher: leaf.publisher ?? '' };
    const output = await this.engine.transform(sheet, payload, params);
    let root: Element;
    try {
      root = parse(output) as Element;
    } catch (err) {
      throw new TransformError(`the output of ${sheet.file} is not one XML element: ${(err as Error).message}`);
    }
    const target = this.targets.find((t) => t.accepts(root));
    if (!target) {
      const formats = this.targets.map((t) => t.format).join(' or ') || 'nothing (no replication is configured)';
      throw new TransformError(`the output of ${sheet.file} is <${root.name} xmlns='${root.getNS() ?? ''}'>; this site writes ${formats}`);
    }
    try {
      return { target, ...(await target.write(root, leaf)) };
    } catch (err) {
      // The output is not one the target can write (the stylesheet's fault), or the database refuses it: quarantined.
      throw err instanceof RefusedWrite || err instanceof TransformError ? err : new OutputWriteFailed(err);
    }
  }

  target(key: string): TransformTarget | undefined {
    return this.targets.find((t) => t.key === key);
  }

  /** Starts checking the retry folder and the stylesheets in use. */
  start(): void {
    const poll = this.o.pollMs ?? 1000;
    const tick = (): void => {
      this.ticking = this.tick()
        .catch((err: unknown) => this.o.log.error('quarantine retry failed', { reason: String(err) }))
        .finally(() => {
          this.ticking = undefined;
          if (this.timer) this.timer = setTimeout(tick, poll);
        });
    };
    this.timer = setTimeout(tick, poll);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.ticking;
    await this.engine.close();
  }

  private async tick(): Promise<void> {
    // A stylesheet file that changed: let subscriptions pause or resume now, not at the next discovery.
    let changed = false;
    for (const [file, entry] of this.compiled) {
      const stamp = await stat(file).then(
        (s) => `${s.mtimeMs}:${s.size}`,
        () => 'missing',
      );
      if (stamp !== entry.stamp) {
        changed = true;
        await this.compile(file).catch(() => undefined);
      }
    }
    if (changed) for (const stage of this.stages.values()) stage.stylesheetChanged();
    for (const entry of await this.quarantine.pendingRetries()) {
      const stage = this.stages.get(entry.adapter ?? 'ajatus');
      if (!stage) {
        this.o.log.warn('quarantined leaf left for retry: its replication is not configured', { id: entry.id, adapter: entry.adapter });
        continue;
      }
      await stage.retry(entry);
    }
  }
}

/** The PartnerSink of one replication: transforms where the subscription says so. */
export class TransformStage implements PartnerSink {
  /** Paused subscriptions (partner NUL node) -> the compile error last logged for them. */
  private readonly paused = new Map<string, string>();
  /** Per source item (service NUL item id): transforms, writes and retractions in call order. */
  private readonly items = new KeyedMutex();
  /**
   * Item ids a retry is looking at -> retractions of that item id called meanwhile, by any
   * service (another partner's retraction may delete the same document): then it does not write.
   */
  private readonly retrying = new Map<string, number>();
  /** Marked entries whose retry could not decide, by id: when the next attempt is due, and how many were postponed. */
  private readonly postponed = new Map<string, { due: number; tries: number }>();

  constructor(
    private readonly t: Transforms,
    private readonly adapter: string,
    private readonly o: StageOptions,
    private readonly log: Logger,
  ) {}

  private spec(partner: string | undefined, node: string): TransformSpec | undefined {
    return partner === undefined ? undefined : this.o.specFor(partner, node);
  }

  /**
   * Whether a subscription may run: false (paused, logged with file, line and message) while
   * its stylesheet does not compile.
   */
  async mayFollow(partner: string, node: string): Promise<boolean> {
    const spec = this.spec(partner, node);
    if (!spec) return true;
    const key = `${partner}\0${node}`;
    try {
      await this.t.compile(this.t.resolve(spec.stylesheet));
      if (this.paused.delete(key)) this.log.info('subscription resumed: its stylesheet compiles', { partner, node, stylesheet: spec.stylesheet });
      return true;
    } catch (err) {
      if (!(err instanceof StylesheetError)) throw err;
      const what = `${err.line}:${err.detail}`;
      if (this.paused.get(key) !== what) this.log.error('subscription paused: its stylesheet does not compile', { partner, node, stylesheet: err.file, line: err.line, error: err.detail });
      this.paused.set(key, what);
      return false;
    }
  }

  stylesheetChanged(): void {
    this.o.onStylesheetChange();
  }

  private leafOf(service: string, node: string, item: Element, partner: string | undefined): Leaf {
    return { adapter: this.adapter, partner, service, node, itemId: String(item.attrs.id ?? ''), publisher: item.attrs.publisher as string | undefined };
  }

  /**
   * Writes one leaf (with its subscription's stylesheet, if any). Resolves to whether it was
   * written: false when skipped or quarantined (both count as handled). Rejects when the write
   * failed in a way that may pass (the database or the store unavailable): nothing was recorded,
   * and the caller applies it again.
   */
  writeItem(service: string, node: string, item: Element, partner?: string): Promise<boolean> {
    const spec = this.spec(partner, node);
    if (!spec) return this.writeNative(service, node, item, partner);
    const payload = item.getChildElements()[0];
    if (!payload) return Promise.resolve(false);
    const leaf = this.leafOf(service, node, item, partner);
    return this.inOrder(leaf, async () => (await this.run(leaf, payload.toString(), spec, undefined)) === 'written');
  }

  /**
   * A leaf without a stylesheet, through the adapter's own sink. The write starts at once (a
   * batching sink collects concurrent writes into its flushes); what follows it is done in call
   * order per item: a leaf the sink refuses for itself (RefusedWrite: CouchDB refuses the
   * document, a revision without history, an attachment that does not verify, a Midgard blob
   * refused) goes to the quarantine and resolves false, so that the node's history position
   * moves on instead of holding there — and replaying everything after it at each restart — for
   * the rest of the run; a leaf written takes an older version of its item out of the quarantine.
   * Any other failure rejects (tried again by the partner manager).
   */
  private writeNative(service: string, node: string, item: Element, partner: string | undefined): Promise<boolean> {
    const write = this.o.native.writeItem(service, node, item, partner).then(
      (written) => ({ written }),
      (err: unknown) => ({ err }),
    );
    const leaf = this.leafOf(service, node, item, partner);
    // One entry per document, whichever node carried it (a one-copy item comes through either).
    const id = (): string => Quarantine.idOf({ ...leaf, node: undefined });
    return this.inOrder(leaf, async () => {
      const outcome = await write;
      if ('written' in outcome) {
        await this.t.quarantine.discard(id); // an older version waiting there is superseded
        return outcome.written;
      }
      if (!(outcome.err instanceof RefusedWrite)) throw outcome.err;
      const reason = outcome.err.message;
      const added = await this.t.quarantine.add({ ...leaf, payload: item.getChildElements()[0]?.toString() ?? '', reason }, id());
      this.log.warn('leaf quarantined', { id: added.id, partner, node, item: leaf.itemId, reason });
      return false;
    });
  }

  /**
   * A batch of leaves: those without a stylesheet go to the adapter's sink together (a batching
   * sink collects them into its flushes; one that does not batch takes them one at a time), the
   * others are transformed and their outputs written together (the target's sink collects
   * them into its flushes), each source item's writes and retractions in call order.
   * Resolves to which were written; rejects once all have settled if one failed in a way that
   * may pass (a failed transform or a refused write is not such a failure: its leaf is quarantined).
   */
  async writeItems(leaves: PartnerLeaf[]): Promise<boolean[]> {
    const native = leaves.filter((l) => !this.spec(l.partner, l.node));
    const transformed = leaves.filter((l) => this.spec(l.partner, l.node));
    const logged = (l: PartnerLeaf) => (err: unknown): never => {
      this.log.error('writing a replicated leaf failed', { from: l.service, node: l.node, item: l.item.attrs.id, reason: String(err) });
      throw err;
    };
    const nativeWrites = this.o.native.writeItems
      ? writeTogether(native, (l) => this.writeNative(l.service, l.node, l.item, l.partner).catch(logged(l)))
      : writeLeaves({ writeItem: (service, node, item, partner) => this.writeNative(service, node, item, partner), retract: () => Promise.resolve() }, native);
    const [a, b] = await Promise.allSettled([nativeWrites, writeTogether(transformed, (l) => this.writeItem(l.service, l.node, l.item, l.partner).catch(logged(l)))]);
    const failures = [a, b].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    if (failures.length > 0 || a.status === 'rejected' || b.status === 'rejected') throw failures[0];
    const written = new Map<PartnerLeaf, boolean>([...native.map((l, i) => [l, a.value[i] ?? false] as const), ...transformed.map((l, i) => [l, b.value[i] ?? false] as const)]);
    return leaves.map((l) => written.get(l) ?? false);
  }

  /** Runs work on one source item after the work on that item called before (writes, retractions, retries). */
  private inOrder<T>(leaf: Pick<Leaf, 'service' | 'itemId'>, work: () => Promise<T>): Promise<T> {
    return this.items.run(`${leaf.service}\0${leaf.itemId}`, work);
  }

  /**
   * Transforms and writes. A transform that fails, or an output the target refuses for itself
   * (RefusedWrite), puts the leaf in (or back in) the quarantine. A write or store failure that
   * may pass, or a transform cut short (TransformInterrupted), rejects: for a leaf as it arrived
   * with the error (the partner manager applies it again), for a quarantined one (`entry`, a
   * `hermod quarantine retry`) with RetryLater (its mark stays: retryLater).
   */
  private async run(leaf: Leaf, payload: string, spec: TransformSpec, entry: QuarantineEntry | undefined): Promise<'written' | 'current' | 'quarantined'> {
    let applied = false;
    try {
      const { target, ref, written } = await this.t.apply(leaf, payload, spec);
      applied = true;
      const key = `${leaf.service}\0${leaf.itemId}`;
      const before = await this.o.state.record<Written>('xt', key);
      const nodes = before?.target === target.key && before.ref === ref ? [...new Set([...before.nodes, leaf.node])] : [leaf.node];
      await this.o.state.setRecord('xt', key, { target: target.key, ref, nodes } satisfies Written);
      this.log[written ? 'info' : 'debug'](written ? 'transformed leaf written' : 'transformed leaf already current', { partner: leaf.partner, node: leaf.node, item: leaf.itemId, stylesheet: spec.stylesheet, target: target.key, ref });
      if (!entry) await this.t.quarantine.discard(Quarantine.idOf(leaf)); // an older version waiting there is superseded
      return written ? 'written' : 'current';
    } catch (caught) {
      // The stylesheet and the output were fine: the database (or the store, recording it) did
      // not take it this time; or the transform was cut short for a reason not its own (Hermod
      // stopping, the worker restarted for another transform).
      const mayPass = caught instanceof OutputWriteFailed || caught instanceof TransformInterrupted || applied;
      const err = caught instanceof OutputWriteFailed ? caught.cause : caught;
      const reason = err instanceof Error ? err.message : String(err);
      if (mayPass) throw entry ? new RetryLater(reason) : err; // a retried entry keeps its mark (retryLater)
      const stylesheet = this.t.resolve(spec.stylesheet);
      if (entry) {
        await this.t.quarantine.requeue(entry, reason);
        this.log.warn('quarantined leaf failed again', { id: entry.id, partner: leaf.partner, node: leaf.node, item: leaf.itemId, stylesheet, reason });
      } else {
        const added = await this.t.quarantine.add({ ...leaf, payload, stylesheet, reason });
        this.log.warn('leaf quarantined', { id: added.id, partner: leaf.partner, node: leaf.node, item: leaf.itemId, stylesheet, reason });
      }
      return 'quarantined';
    }
  }

  /** Another attempt for a quarantined leaf, with the subscription's current stylesheet (in order with that item's live leaves). */
  retry(entry: QuarantineEntry): Promise<void> {
    return this.inOrder(entry, () => this.retryNow(entry));
  }

  private async retryNow(marked: QuarantineEntry): Promise<void> {
    const later = this.postponed.get(marked.id);
    if (later && Date.now() < later.due) return;
    // Read when the retries were listed: a newer version of the item may have replaced it since
    // (quarantined again, or written: no mark left). Only the entry as it is now is retried.
    const entry = await this.t.quarantine.marked(marked.id);
    if (!entry || entry.at !== marked.at) {
      this.postponed.delete(marked.id);
      return;
    }
    const leaf: Leaf = { adapter: this.adapter, partner: entry.partner, service: entry.service, node: entry.node, itemId: entry.itemId, publisher: entry.publisher };
    const spec = this.spec(entry.partner, entry.node);
    if (spec) {
      let outcome: Awaited<ReturnType<TransformStage['run']>>;
      try {
        outcome = await this.run(leaf, entry.payload, spec, entry);
      } catch (err) {
        if (!(err instanceof RetryLater)) throw err;
        return this.retryLater(entry, err.message);
      }
      this.postponed.delete(entry.id);
      if (outcome === 'quarantined') return;
      await this.t.quarantine.done(entry.id);
      this.log.info('quarantined leaf delivered', { id: entry.id, item: entry.itemId });
      return;
    }
    // The subscription has no stylesheet any more: the adapter's own sink takes the leaf as it came
    // — unless the partner has withdrawn it since (a retraction while it waited: written now, it
    // would undo that retraction; PartnerSink.withdrawn), or a retraction of the item is called
    // while this looks (it reaches the sink first: the mark stays, for the next check).
    const key = entry.itemId;
    this.retrying.set(key, 0);
    let withdrawn: boolean;
    try {
      withdrawn = await this.droppedIfWithdrawn(entry, entry.partner);
    } catch (err) {
      this.retrying.delete(key);
      const why = err instanceof NotKnown ? `whether the partner still offers the item is not known: ${err.message}` : err instanceof Error ? err.message : String(err);
      return this.retryLater(entry, why);
    }
    const retractedMeanwhile = this.retrying.get(key) !== 0;
    this.retrying.delete(key);
    if (withdrawn || retractedMeanwhile) return;
    // No await from here to the sink's write: a retraction called from now on reaches the sink after it.
    try {
      const item = new Element('item', { id: entry.itemId, ...(entry.publisher ? { publisher: entry.publisher } : {}) }).cnode(parse(entry.payload) as Element).up();
      await this.o.native.writeItem(entry.service, entry.node, item, entry.partner);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (!(err instanceof RefusedWrite)) return this.retryLater(entry, reason); // the database down: not a decision
      this.postponed.delete(entry.id);
      await this.t.quarantine.requeue(entry, reason);
      return;
    }
    this.postponed.delete(entry.id);
    await this.t.quarantine.done(entry.id);
    this.log.info('quarantined leaf delivered without a stylesheet', { id: entry.id, item: entry.itemId });
  }

  /**
   * A retry that could not decide (`why`): the mark stays and the entry is tried again later
   * (RETRY_LATER_FIRST_MS, doubling), at most RETRY_LATER_TRIES times; then it goes back to the
   * quarantine, its reason saying `not retried: <why>` (the reasons do not pile up).
   */
  private async retryLater(entry: QuarantineEntry, why: string): Promise<void> {
    const tries = (this.postponed.get(entry.id)?.tries ?? 0) + 1;
    if (tries <= RETRY_LATER_TRIES) {
      const wait = RETRY_LATER_FIRST_MS * 2 ** (tries - 1);
      this.postponed.set(entry.id, { due: Date.now() + wait, tries });
      this.log.info('quarantined leaf retry postponed: it could not be decided now', { id: entry.id, item: entry.itemId, reason: why, retryInMs: wait, tries });
      return;
    }
    this.postponed.delete(entry.id);
    const refused = entry.reason.replace(/ \(not retried: .*\)$/s, '');
    await this.t.quarantine.requeue(entry, `${refused} (not retried: ${why})`);
  }

  /**
   * An item retracted from a followed node: undone locally (see the sinks). With a stylesheet, a
   * leaf of it quarantined from that node is dropped too (its subscription no longer carries it).
   */
  retract(service: string, node: string, itemId: string, followed: (node: string) => boolean, partner?: string): Promise<void> {
    const seen = this.retrying.get(itemId);
    if (seen !== undefined) this.retrying.set(itemId, seen + 1);
    if (!this.spec(partner, node)) {
      // Started at once, as a write is (the sink keeps each document's order); the quarantine's
      // leaf of the item is looked at after it, in order with that item's writes and retries.
      const undone = this.o.native.retract(service, node, itemId, followed, partner);
      if (!this.o.native.withdrawn) return undone;
      undone.catch(() => undefined); // heard when its turn comes (below), however long that takes
      return this.inOrder({ service, itemId }, async () => {
        await undone;
        await this.dropWithdrawn(service, node, itemId, partner);
      });
    }
    return this.inOrder({ service, itemId }, async () => {
      await this.retractNow(service, node, itemId, followed, partner);
      await this.t.quarantine.discard(Quarantine.idOf({ adapter: this.adapter, service, node, itemId }));
    });
  }

  /**
   * After a retraction applied by the adapter's own sink: the item's quarantined leaf (one entry
   * per document, whichever node carried it), if any, is dropped when the sink says it is
   * withdrawn (PartnerSink.withdrawn) — a later `hermod quarantine retry` would undo the
   * retraction. Kept, with a debug line, when that cannot be told now (a warning when the store
   * failed): `retryNow` asks again before writing. No store read unless the quarantine holds anything.
   */
  private async dropWithdrawn(service: string, node: string, itemId: string, partner: string | undefined): Promise<void> {
    let entry: QuarantineEntry | undefined;
    try {
      entry = await this.t.quarantine.find(() => Quarantine.idOf({ adapter: this.adapter, service, node: undefined, itemId }));
      if (entry) await this.droppedIfWithdrawn(entry, partner);
    } catch (err) {
      // The retraction itself is applied; a retry checks again before it writes.
      if (err instanceof NotKnown) this.log.debug('quarantined leaf kept: whether its item is still offered is not known', { id: entry?.id, partner, node, item: itemId, reason: err.message });
      else this.log.warn('quarantined leaf not looked at after its retraction (the store failed); a retry checks it again', { partner, node, item: itemId, reason: String(err) });
    }
  }

  /**
   * Asks the adapter's sink whether a quarantined leaf is withdrawn (PartnerSink.withdrawn) and,
   * if so, drops it with an info line; resolves to whether it was dropped. Rejects with NotKnown
   * when that cannot be told now (the entry stays), with the store's error when dropping failed.
   */
  private async droppedIfWithdrawn(entry: QuarantineEntry, partner: string | undefined): Promise<boolean> {
    const sink = this.o.native;
    if (!sink.withdrawn) return false;
    const who = entry.partner ?? partner;
    let withdrawn: boolean;
    try {
      withdrawn = await sink.withdrawn({ service: entry.service, node: entry.node, itemId: entry.itemId, ...(who !== undefined ? { partner: who } : {}), payload: entry.payload });
    } catch (err) {
      throw new NotKnown(err instanceof Error ? err.message : String(err));
    }
    if (!withdrawn) return false;
    await this.t.quarantine.drop(entry.id);
    this.log.info('quarantined leaf dropped: its partner withdrew the item', { id: entry.id, partner: who, node: entry.node, item: entry.itemId, reason: entry.reason });
    return true;
  }

  private async retractNow(service: string, node: string, itemId: string, followed: (node: string) => boolean, partner: string | undefined): Promise<void> {
    const key = `${service}\0${itemId}`;
    const written = await this.o.state.record<Written>('xt', key);
    if (!written || written.nodes.length === 0) return;
    const nodes = written.nodes.filter((n) => n !== node && followed(n));
    await this.o.state.setRecord('xt', key, { ...written, nodes });
    if (nodes.length > 0) return; // another followed node still carries the item
    const target = this.t.target(written.target);
    await target?.remove(written.ref, { adapter: this.adapter, partner, service, node, itemId, publisher: undefined });
    this.log.info('transformed leaf retracted', { partner, node, item: itemId, target: written.target, ref: written.ref });
  }
}
