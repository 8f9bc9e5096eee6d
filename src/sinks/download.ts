// The receiving side of out-of-band attachments (XEP-0363 uploads a partner's publisher made,
// src/replication/http-upload.ts): download the referenced URL and verify length and SHA-256
// before a sink writes the bytes. A failure throws an Error naming the URL and what differs: a
// RefusedWrite where trying again cannot help (not http(s), HTTP 4xx, length or hash differ).

import { sha256 } from '../util/digest.ts';
import { RefusedWrite } from './sink.ts';

/**
 * Most bytes of one referenced upload: it is held in memory, base64-encoded into the sink's
 * write (CouchDB `_bulk_docs`, a Midgard spool file), so a larger one is refused for good.
 */
export const DOWNLOAD_MAX = 256 * 1024 * 1024;

/** Downloads a referenced upload, checking its length and SHA-256. */
export const fetchUpload = (ref: { url: string; length: number; sha256: string }): Promise<Buffer> => download(ref.url, ref.length, ref.sha256);

/**
 * Fetches an uploaded attachment (`length` bytes, at most DOWNLOAD_MAX; hex SHA-256 `digest`) and checks both. A body
 * longer than `length` is refused as soon as it is (announced by Content-Length, or read past
 * it): never held whole in memory. Rejects with RefusedWrite where trying again cannot help,
 * with an Error otherwise (network, 5xx, 408, 429, the 120 s timeout).
 */
export async function download(url: string, length: number, digest: string): Promise<Buffer> {
  if (!/^https?:\/\//.test(url)) throw new RefusedWrite(`attachment URL is not http(s): ${url}`);
  if (!Number.isSafeInteger(length) || length < 0) throw new RefusedWrite(`attachment ${url}: declared length ${String(length)} is not a number of bytes`);
  if (length > DOWNLOAD_MAX) throw new RefusedWrite(`attachment ${url}: ${length} bytes declared, more than the ${DOWNLOAD_MAX} bytes an attachment may have here (it is held in memory and written inline)`);
  const res = await fetch(url, { signal: AbortSignal.timeout(120_000) });
  // 4xx says the upload is not there or not ours to read; 408 and 429 say nothing about it (try again).
  if (!res.ok) {
    await res.body?.cancel();
    throw new (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429 ? RefusedWrite : Error)(`attachment download ${url}: HTTP ${res.status}`);
  }
  // Content-Length counts the bytes as sent: only comparable when they are not content-encoded.
  const announced = res.headers.get('content-length');
  const encoding = res.headers.get('content-encoding');
  if (announced !== null && (encoding === null || encoding === 'identity') && Number(announced) !== length) {
    await res.body?.cancel();
    throw new RefusedWrite(`attachment ${url}: ${announced} bytes announced, expected ${length}`);
  }
  const chunks: Uint8Array[] = [];
  let read = 0;
  for await (const chunk of (res.body ?? []) as AsyncIterable<Uint8Array>) {
    read += chunk.length;
    if (read > length) throw new RefusedWrite(`attachment ${url}: more than the ${length} bytes expected`); // leaving the loop cancels the body
    chunks.push(chunk);
  }
  const bytes = Buffer.concat(chunks, read);
  if (bytes.length !== length) throw new RefusedWrite(`attachment ${url}: ${bytes.length} bytes, expected ${length}`);
  if (sha256(bytes) !== digest) throw new RefusedWrite(`attachment ${url}: SHA-256 mismatch`);
  return bytes;
}
