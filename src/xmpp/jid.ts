// JID parsing and validation at the edge (RFC 7622, without full PRECIS): everything inside
// Hermod handles JIDs as normalised strings (lower-cased local part and domain).

export interface Jid {
  local: string;
  domain: string;
  resource: string;
}

const LOCAL_FORBIDDEN = /["&'/:<>@\s]/;
const DOMAIN_PATTERN = /^(?:\[[0-9a-f:.]+\]|[^\s@/\\<>"'&]+)$/i;
const PART_MAX_BYTES = 1023;

/** Parses and normalises a JID; returns undefined when it is not valid. */
export function parseJid(input: string): Jid | undefined {
  if (typeof input !== 'string' || input.length === 0) return undefined;
  const slash = input.indexOf('/');
  const head = slash === -1 ? input : input.slice(0, slash);
  const resource = slash === -1 ? '' : input.slice(slash + 1);
  if (slash !== -1 && resource.length === 0) return undefined;
  const at = head.indexOf('@');
  const local = at === -1 ? '' : head.slice(0, at);
  let domain = at === -1 ? head : head.slice(at + 1);
  if (at !== -1 && local.length === 0) return undefined;
  if (domain.endsWith('.')) domain = domain.slice(0, -1);
  if (domain.length === 0 || !DOMAIN_PATTERN.test(domain) || domain.includes('..')) return undefined;
  if (LOCAL_FORBIDDEN.test(local)) return undefined;
  for (const part of [local, domain, resource]) {
    if (Buffer.byteLength(part) > PART_MAX_BYTES || /[\u0000-\u001f\u007f]/.test(part)) return undefined;
  }
  return { local: local.toLowerCase(), domain: domain.toLowerCase(), resource };
}

export function formatJid(jid: Jid): string {
  return (jid.local ? `${jid.local}@` : '') + jid.domain + (jid.resource ? `/${jid.resource}` : '');
}

/** Normalised JID string, or undefined if invalid. */
export function normalizeJid(input: string): string | undefined {
  const jid = parseJid(input);
  return jid && formatJid(jid);
}

/** True for a domain-only JID such as a component address. */
export function isDomainJid(input: string): boolean {
  const jid = parseJid(input);
  return !!jid && jid.local === '' && jid.resource === '';
}
