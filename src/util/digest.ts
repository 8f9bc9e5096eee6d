// Content digests shared by the sending and the receiving side of out-of-band attachments.

import { createHash } from 'node:crypto';

/** SHA-256 of some bytes, base64 (as XEP-0300 hashes carry it). */
export const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('base64');
