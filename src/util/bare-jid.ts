// The one bare-JID function of Hermod, below every layer (store, pub/sub core, XMPP edge) so that
// none of them imports another for it. JIDs inside Hermod are normalised at the edge
// (src/xmpp/jid.ts parseJid/normalizeJid); this is pure string work on such JIDs.

/** The bare JID of a JID string: everything before the first '/' (the JID itself when it has no resource). */
export function bareJid(jid: string): string {
  const slash = jid.indexOf('/');
  return slash === -1 ? jid : jid.slice(0, slash);
}
