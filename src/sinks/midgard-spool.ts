// Sink: partners' Midgard leaves into an inbound spool directory for Midgard's own importer
// (midgard_replicator::import_from_xml; see docs/midgard-importer.md). Each accepted leaf is
// validated (well-formed, namespace, GUIDs, item id = object GUID) and written atomically
// (temp file + rename) as one file, named so that name order is arrival order. The importer's
// rule is applied first, per object as the importer does: a leaf none of whose objects (the
// object, its parameters and attachments) has a metadata/revised newer than both the one already
// delivered for that GUID and the local object's (as this site's publisher last saw it) is
// skipped, so the spool holds no stale versions. Each object's revised is written in UTC
// (`+0000`): midgard-core's importer compares revised as text, which is time order only in one
// spelling. The version recorded as delivered never moves back (a leaf whose parameter is newer
// but whose object is older keeps the object's newer delivered version). What was delivered
// is remembered durably (also what stops the publisher from echoing the import back).
// Blobs that travel as references to an XEP-0363 upload are downloaded and checked (length,
// SHA-256) and written inline, as the importer expects; one that cannot be fetched fails the
// leaf (logged and thrown: no file, nothing recorded as delivered, so it can come again).

import { rename, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Element } from 'ltx';
import { formatMidgardDate, MidgardFormatError, parseMidgardDate, parseMidgardEntry, parseMidgardXml, replaceBlobs, revisedOf, serializeMidgard, versionsOf, type MidgardDocument } from '../codecs/midgard.ts';
import type { Logger } from '../log.ts';
import { fetchUpload } from './download.ts';
import { RefusedWrite, type PartnerSink } from './sink.ts';
import type { ReplicationState } from '../replication/state.ts';
import { KeyedMutex } from '../util/mutex.ts';

export interface MidgardSpoolSinkOptions {
  dir: string;
  state: ReplicationState;
  log: Logger;
  /** Called with the path of each file written (e.g. to emit a D-Bus signal). */
  onWritten?: (file: string) => void;
}

/** Rewrites every object's metadata/revised under `root` in UTC (`+0000`); one that does not parse stays as it is. */
function utcRevised(root: Element): void {
  for (const el of root.getChildElements()) {
    if (el.name === 'metadata') {
      const revised = el.getChild('revised');
      const at = parseMidgardDate(revised?.getText());
      if (revised && at !== undefined) revised.children = [formatMidgardDate(at)];
      continue;
    }
    utcRevised(el);
  }
}

/** Whether `incoming` is strictly newer than `delivered` (dates when both parse, else text). */
export function isNewer(incoming: string, delivered: string | undefined): boolean {
  if (delivered === undefined) return true;
  const a = parseMidgardDate(incoming);
  const b = parseMidgardDate(delivered);
  return a !== undefined && b !== undefined ? a > b : incoming > delivered;
}

export class MidgardSpoolSink implements PartnerSink {
  private readonly lock = new KeyedMutex();
  written = 0;

  constructor(private readonly o: MidgardSpoolSinkOptions) {}

  async start(): Promise<void> {
    await mkdir(this.o.dir, { recursive: true });
  }

  writeItem(service: string, node: string, item: Element): Promise<boolean> {
    return this.lock.run('spool', () => this.write(service, node, item));
  }

  private async write(service: string, node: string, item: Element): Promise<boolean> {
    const { log, state } = this.o;
    const payload = item.getChildElements()[0];
    if (!payload) return false;
    let doc;
    try {
      doc = parseMidgardEntry(payload);
    } catch (err) {
      if (!(err instanceof MidgardFormatError)) throw err;
      log.warn('leaf skipped: not a Midgard document', { service, node, item: item.attrs.id, reason: err.message });
      return false;
    }
    const main = doc.main as NonNullable<typeof doc.main>;
    if (main.guid !== String(item.attrs.id).toLowerCase()) {
      log.warn('leaf skipped: item id differs from object GUID', { service, node, item: item.attrs.id, guid: main.guid });
      return false;
    }
    const revised = revisedOf(main);
    const versions = versionsOf(doc);
    const local = await this.localVersions(main.guid);
    const known = new Map<string, string | undefined>();
    let fresh = false;
    for (const [guid, v] of versions) {
      const delivered = await state.record<string>('in', guid);
      known.set(guid, delivered);
      const here = local.get(guid);
      if (v.startsWith('#') ? v !== delivered && v !== here : isNewer(v, delivered) && (here === undefined || here.startsWith('#') || isNewer(v, here))) fresh = true;
    }
    if (!fresh) {
      log.debug('leaf skipped: no object newer than the version delivered or the local one', { service, node, guid: main.guid, revised });
      return false;
    }
    const complete = await this.inlineBlobs(doc, { service, node });
    utcRevised(complete.root);
    const seq = ((await state.record<number>('spool', 'seq')) ?? 0) + 1;
    const name = `${String(seq).padStart(12, '0')}-${main.guid}.xml`;
    const tmp = path.join(this.o.dir, `.${name}.tmp`);
    await writeFile(tmp, serializeMidgard(complete.root));
    await rename(tmp, path.join(this.o.dir, name));
    // The sequence and the versions delivered in one store write (was one per record).
    const record = state.batch();
    record.setRecord('spool', 'seq', seq);
    for (const [guid, version] of versions) {
      const at = version.startsWith('#') ? undefined : parseMidgardDate(version);
      const delivered = known.get(guid);
      // As written to the spool (UTC); never back to an older one than was delivered before.
      const utc = at === undefined ? version : formatMidgardDate(at);
      record.setRecord('in', guid, at !== undefined && delivered !== undefined && !isNewer(utc, delivered) ? delivered : utc);
    }
    await state.commit(record);
    this.written++;
    log.info('midgard object written to the inbound spool', { service, node, guid: main.guid, class: main.className, revised, file: name });
    this.o.onWritten?.(path.join(this.o.dir, name));
    return true;
  }

  /**
   * The versions of the local object and its children as this site's publisher last saw them
   * (its merged document: the `doc` record), by GUID; empty when it has not seen the object.
   */
  private async localVersions(guid: string): Promise<Map<string, string>> {
    const xml = await this.o.state.record<string>('doc', guid);
    if (xml === undefined) return new Map();
    try {
      return new Map(versionsOf(parseMidgardXml(xml)));
    } catch {
      return new Map(); // unreadable: the delivered versions decide alone
    }
  }

  /** The document with every referenced blob downloaded, verified and inline. */
  private async inlineBlobs(doc: MidgardDocument, where: { service: string; node: string }): Promise<MidgardDocument> {
    if (doc.blobRefs.size === 0) return doc;
    const bytes = new Map<string, string>();
    for (const [guid, ref] of doc.blobRefs) {
      try {
        bytes.set(guid, (await fetchUpload(ref)).toString('base64'));
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        this.o.log.error('leaf not written: a large blob could not be fetched', { ...where, guid: doc.main?.guid, attachment: guid, bytes: ref.length, reason });
        throw new (err instanceof RefusedWrite ? RefusedWrite : Error)(`blob of attachment ${guid} of ${doc.main?.guid}: ${reason}`);
      }
    }
    return replaceBlobs(doc, bytes);
  }

  /** Deletions arrive as tombstone leaves (published before the retraction); nothing to do. */
  async retract(service: string, node: string, itemId: string): Promise<void> {
    this.o.log.debug('retraction noted (the tombstone leaf carries the deletion)', { service, node, item: itemId });
  }
}
