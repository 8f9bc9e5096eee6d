// Large attachments travel out of band: XEP-0363 HTTP File Upload on the server the component is
// attached to (Prosody http_file_share, ejabberd mod_http_upload). The publisher asks for a slot,
// PUTs the bytes and references the GET URL with length, type and a SHA-256 (XEP-0300); the
// receiving side downloads and verifies before writing. Nothing is dropped silently: a failure is
// an error that stops that document (logged by the caller).
// Shared by Ajatus (CouchDB attachments) and Midgard (midgard_blob): the inline budget rule
// (`splitByBudget`), the upload with its record of what was already uploaded (`Offloader`), the
// Atom enclosure for feed readers (`enclosure`). The receiving side's verified download is
// src/sinks/download.ts.

import { createHash } from 'node:crypto';
import { Element } from 'ltx';
import type { IqCaller } from '../component/iq-caller.ts';
import { IqError } from '../xmpp/iq-error.ts';
import type { Logger } from '../log.ts';
import { sha256 } from '../util/digest.ts';
import { NS } from '../xmpp/ns.ts';

export { sha256 };

export const HTTP_UPLOAD = 'urn:xmpp:http:upload:0';
const HEADERS_ALLOWED = new Set(['authorization', 'cookie', 'expires']);



/**
 * The upload service refused the bytes in a way trying again cannot change (XEP-0363 §4: an IQ
 * error that decides, e.g. not-acceptable for a file too large, forbidden; the PUT answered with
 * a 4xx other than 408 and 429). Anything else an upload throws (no answer, the server down or
 * restarting, no upload service found yet, a 5xx) may pass.
 */
export class UploadRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UploadRefused';
  }
}

export class HttpUploader {
  private service: string | undefined;

  constructor(
    private readonly iq: IqCaller,
    /** Domain whose services are searched for the upload service. */
    private readonly domain: string,
    private readonly log: Logger,
  ) {}

  /** The upload service JID (disco#items of the domain, identity store/file + the feature). */
  private async findService(): Promise<string> {
    if (this.service) return this.service;
    const items = await this.iq.request(this.domain, 'get', new Element('query', { xmlns: NS.DISCO_ITEMS }));
    for (const item of items.getChild('query', NS.DISCO_ITEMS)?.getChildren('item') ?? []) {
      const jid = item.attrs.jid as string;
      try {
        const info = (await this.iq.request(jid, 'get', new Element('query', { xmlns: NS.DISCO_INFO }))).getChild('query', NS.DISCO_INFO);
        const isStore = info?.getChildren('identity').some((i) => i.attrs.category === 'store' && i.attrs.type === 'file');
        if (isStore && info?.getChildren('feature').some((f) => f.attrs.var === HTTP_UPLOAD)) {
          this.service = jid;
          this.log.info('HTTP upload service found', { service: jid });
          return jid;
        }
      } catch {
        /* not answering: not ours */
      }
    }
    throw new Error(`no XEP-0363 upload service on ${this.domain} (enable http_file_share / mod_http_upload)`);
  }

  /** Uploads bytes; returns the URL to fetch them from. */
  async upload(filename: string, bytes: Buffer, contentType: string): Promise<string> {
    const service = await this.findService();
    let slot: Element;
    try {
      slot = await this.iq.request(service, 'get', new Element('request', { xmlns: HTTP_UPLOAD, filename, size: String(bytes.length), 'content-type': contentType }));
    } catch (err) {
      if (err instanceof IqError && !err.undecided) throw new UploadRefused(`upload service ${service} refused a slot for ${filename} (${bytes.length} bytes): ${err.message}`);
      throw err;
    }
    const slotEl = slot.getChild('slot', HTTP_UPLOAD);
    const put = slotEl?.getChild('put');
    const getUrl = slotEl?.getChild('get')?.attrs.url as string | undefined;
    if (!put?.attrs.url || !getUrl) throw new Error(`upload service ${service} gave no put/get URL`);
    const headers: Record<string, string> = { 'content-type': contentType, 'content-length': String(bytes.length) };
    for (const h of put.getChildren('header')) {
      const name = String(h.attrs.name ?? '').toLowerCase();
      if (HEADERS_ALLOWED.has(name)) headers[name] = h.getText().replace(/[\r\n]/g, '');
    }
    const res = await fetch(put.attrs.url as string, { method: 'PUT', headers, body: new Uint8Array(bytes), signal: AbortSignal.timeout(120_000) });
    if (!res.ok) throw new (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429 ? UploadRefused : Error)(`upload of ${filename} refused: HTTP ${res.status}`);
    return getUrl;
  }
}

/** What a document carries instead of the bytes of an uploaded attachment. */
export interface UploadRef {
  url: string;
  /** Bytes. */
  length: number;
  /** SHA-256 of the bytes, base64 (XEP-0300). */
  sha256: string;
  contentType: string;
}

/**
 * The inline budget rule: the smallest items stay inline while their sizes add up to at most
 * `max` bytes; returns the others (to be uploaded), largest last.
 */
export function splitByBudget<T>(items: T[], size: (item: T) => number, max: number): T[] {
  let inline = 0;
  const out: T[] = [];
  for (const item of [...items].sort((a, b) => size(a) - size(b))) {
    if (inline + size(item) <= max) inline += size(item);
    else out.push(item);
  }
  return out;
}

/** Where uploads are remembered (key -> URL and hash), so unchanged bytes are not uploaded again. */
export interface UploadRecords {
  upload(key: string): Promise<{ url: string; sha256: string } | undefined>;
  setUpload(key: string, record: { url: string; sha256: string }): Promise<void>;
}

/** Uploads what does not fit inline, once per content. */
export class Offloader {
  constructor(
    private readonly uploader: HttpUploader | undefined,
    private readonly records: UploadRecords,
    private readonly log: Logger,
    /** The config key of the budget, named in the error when no upload service is configured. */
    private readonly budgetKey: string,
  ) {}

  /**
   * Uploads `bytes` (or finds the earlier upload under `key`, by default their SHA-256) and
   * returns the reference. Throws when there is no upload service or the upload fails.
   */
  async offload(what: { filename: string; bytes: Buffer; contentType: string; key?: string; logFields?: Record<string, unknown> }): Promise<UploadRef> {
    const { filename, bytes, contentType } = what;
    if (!this.uploader) throw new Error(`${filename} does not fit ${this.budgetKey} and no upload service is available`);
    const key = what.key ?? createHash('sha256').update(bytes).digest('hex');
    let record = await this.records.upload(key);
    if (!record) {
      const url = await this.uploader.upload(filename.replace(/[^\w.-]+/g, '_').slice(0, 200), bytes, contentType);
      record = { url, sha256: sha256(bytes) };
      await this.records.setUpload(key, record);
      this.log.info('attachment uploaded', { ...(what.logFields ?? { file: filename }), bytes: bytes.length });
    }
    return { url: record.url, length: bytes.length, sha256: record.sha256, contentType };
  }
}

/** Atom `link rel="enclosure"` for an uploaded attachment, with its XEP-0300 SHA-256 (feed readers). */
export function enclosure(ref: UploadRef, title: string): Element {
  const link = new Element('link', { rel: 'enclosure', href: ref.url, length: String(ref.length), type: ref.contentType, title });
  link.c('hash', { xmlns: 'urn:xmpp:hashes:2', algo: 'sha-256' }).t(ref.sha256);
  return link;
}
