// The receiving side of out-of-band attachments (XEP-0363 uploads a partner's publisher made,
// src/replication/http-upload.ts): download the referenced URL and verify length and SHA-256
// before a sink writes the bytes. A failure throws an Error naming the URL and what differs: a
// RefusedWrite where trying again cannot help (not http(s), HTTP 4xx, length or hash differ).

import { sha256 } from '../util/digest.ts';
import { RefusedWrite } from './sink.ts';

/** Downloads a referenced upload, checking its length and SHA-256. */
export const fetchUpload = (ref: { url: string; length: number; sha256: string }): Promise<Buffer> => download(ref.url, ref.length, ref.sha256);

/** Fetches an uploaded attachment and checks its length and SHA-256. */
export async function download(url: string, length: number, digest: string): Promise<Buffer> {
  if (!/^https?:\/\//.test(url)) throw new RefusedWrite(`attachment URL is not http(s): ${url}`);
  const res = await fetch(url, { signal: AbortSignal.timeout(120_000) });
  // 4xx says the upload is not there or not ours to read; 408 and 429 say nothing about it (try again).
  if (!res.ok) throw new (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429 ? RefusedWrite : Error)(`attachment download ${url}: HTTP ${res.status}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  if (bytes.length !== length) throw new RefusedWrite(`attachment ${url}: ${bytes.length} bytes, expected ${length}`);
  if (sha256(bytes) !== digest) throw new RefusedWrite(`attachment ${url}: SHA-256 mismatch`);
  return bytes;
}
