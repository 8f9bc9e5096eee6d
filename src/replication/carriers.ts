// Which partner nodes to ask whether they still carry a document, before a partner's retraction
// deletes it here (the Ajatus sink's carrier lookup, src/replication/ajatus.ts). Pure: the caller
// gives what is followed, the retracting service's history positions, who owns which service and
// the partner settings; it asks the nodes (one IQ each) and decides.
//
// - The retracting service's own nodes: those followed now, and those followed in an earlier run
//   (a history position) that the partner's settings still name — right after a restart,
//   discovery has not re-followed them all yet. Never a node with a stylesheet of its own (its
//   documents are the stylesheet's outputs, not this document).
// - Other services whose documents are written into the same database (sites in a triangle: b has
//   c's newer revision of what a retracts now; a's retraction must not delete what c still
//   publishes), only the nodes of the document's tags that are followed now. Not yet: their nodes
//   followed in an earlier run. Right after a restart, before discovery has found a service's
//   partner, its positions cannot be told from those of a removed partner or of a service the
//   partner left (a dead service that never answers would keep documents for good); that needs
//   the service -> partner record kept in the replication state (docs: session 17's note).

/** A node of a partner's service: [service JID, node]. */
export type ServiceNode = readonly [service: string, node: string];

export interface CarrierScope {
  /** The service whose retraction is being decided. */
  service: string;
  /** Its partner (undefined: not known). */
  partner: string | undefined;
  /** The nodes this replication follows now, of every service. */
  followed: readonly ServiceNode[];
  /** The retracting service's nodes with a history position (followed now or in an earlier run). */
  positions: readonly string[];
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
}

/**
 * The nodes to ask, in order: `own` (the retracting service's) and `others` (other services
 * writing into the same database). No node twice. Errors: none.
 */
export function carrierCandidates(s: CarrierScope): { own: ServiceNode[]; others: ServiceNode[] } {
  const own: ServiceNode[] = [];
  const others: ServiceNode[] = [];
  const seen = new Set<string>();
  const add = (list: ServiceNode[], service: string, node: string): void => {
    const key = `${service}\0${node}`;
    if (seen.has(key)) return;
    seen.add(key);
    list.push([service, node]);
  };
  for (const [service, node] of s.followed) {
    if (service === s.service) {
      if (!s.transformed(s.partner, node)) add(own, service, node);
      continue;
    }
    if (s.tagged && !s.tagged.has(node)) continue;
    const owner = s.ownerOf(service);
    if (s.sameTarget(owner) && !s.transformed(owner, node)) add(others, service, node);
  }
  for (const node of s.positions) if (s.named(s.partner, node) && !s.transformed(s.partner, node)) add(own, s.service, node);
  return { own, others };
}
