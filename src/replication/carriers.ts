// Which partner nodes to ask whether they still carry a document, before a partner's retraction
// deletes it here (the Ajatus sink's carrier lookup, src/replication/ajatus.ts). Pure: the caller
// gives what is followed, what has a history position, who owns which service, and the partner
// settings; it asks the nodes (one IQ each) and decides.
//
// - The retracting service's own nodes: those followed now, and those followed in an earlier run
//   (a history position) that the partner's settings still name — right after a restart,
//   discovery has not re-followed them all yet. Never a node with a stylesheet of its own (its
//   documents are the stylesheet's outputs, not this document).
// - Other services whose documents are written into the same database (sites in a triangle: b has
//   c's newer revision of what a retracts now; a's retraction must not delete what c still
//   publishes), only the nodes of the document's tags: those followed now, and those with a
//   history position that their partner's settings still name. Right after a restart a service's
//   partner is not known before discovery reaches it; until the first full discovery round is
//   done, such a service's nodes with a position count too (asking a node that does not carry the
//   document costs one IQ; missing one that does deletes a revision another site still publishes).
//   After it, a service no partner owns is no partner's: its old positions are ignored.

/** A node of a partner's service: [service JID, node]. */
export type ServiceNode = readonly [service: string, node: string];

export interface CarrierScope {
  /** The service whose retraction is being decided. */
  service: string;
  /** Its partner (undefined: not known). */
  partner: string | undefined;
  /** The nodes this replication follows now. */
  followed: readonly ServiceNode[];
  /** The nodes with a history position (followed now or in an earlier run). */
  positions: readonly ServiceNode[];
  /** The partner that owns a service, as this run's discovery found it (undefined: none found). */
  ownerOf(service: string): string | undefined;
  /** Whether a partner's settings name the node (its `follow` list, or every tag node). */
  named(partner: string | undefined, node: string): boolean;
  /** Whether a partner's settings give the node a stylesheet of its own. */
  transformed(partner: string | undefined, node: string): boolean;
  /** Whether a partner's documents are written into the database the retracting partner's are. */
  sameTarget(partner: string | undefined): boolean;
  /** The nodes of the document's tags (undefined: the document is not known here; every node counts). */
  tagged: ReadonlySet<string> | undefined;
  /** True until this run's first full discovery round is done. */
  starting: boolean;
}

/**
 * The nodes to ask, in order: `own` (the retracting service's) and `others` (other services
 * writing into the same database). No node twice. Errors: none.
 */
export function carrierCandidates(s: CarrierScope): { own: ServiceNode[]; others: ServiceNode[] } {
  const followedNow = new Set(s.followed.map(([service, node]) => `${service}\0${node}`));
  const own: ServiceNode[] = [];
  const others: ServiceNode[] = [];
  const seen = new Set<string>();
  const consider = ([service, node]: ServiceNode, now: boolean): void => {
    const key = `${service}\0${node}`;
    if (seen.has(key)) return;
    if (service === s.service) {
      if ((now || s.named(s.partner, node)) && !s.transformed(s.partner, node)) {
        seen.add(key);
        own.push([service, node]);
      }
      return;
    }
    if (s.tagged && !s.tagged.has(node)) return;
    const owner = s.ownerOf(service);
    if (!s.sameTarget(owner) || s.transformed(owner, node)) return;
    // Followed now; or a position its partner still names; or, before discovery found its partner, any position.
    if (now || (owner !== undefined ? s.named(owner, node) : s.starting)) {
      seen.add(key);
      others.push([service, node]);
    }
  };
  for (const sn of s.followed) consider(sn, true);
  for (const sn of s.positions) if (!followedNow.has(`${sn[0]}\0${sn[1]}`)) consider(sn, false);
  return { own, others };
}
