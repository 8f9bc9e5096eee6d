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
//   publishes), only the nodes of the document's tags: those followed now (`others`), and — right
//   after a restart, before discovery has followed them again — those followed in an earlier run
//   (a history position) of a service whose partner at its last discovery (kept in the
//   replication state) is still a partner that names the node (`earlier`). A node of `earlier`
//   counts as carrying only on a positive answer: a service the partner has left, or one that is
//   down, must not keep documents for good; a node followed now that does not answer does count
//   (kept rather than deleted on a guess).

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
  /** Nodes of every service with a history position (followed now or in an earlier run). Default none. */
  earlier?: readonly ServiceNode[];
  /**
   * The partner a service belonged to at its last discovery (kept in the replication state), if
   * that contact is still a partner whose discovery has not completed in this run (else what it
   * wants is followed now); undefined otherwise.
   */
  recordedOwnerOf?(service: string): string | undefined;
}

/**
 * The nodes to ask, in order: `own` (the retracting service's), `others` (other services writing
 * into the same database, followed now) and `earlier` (theirs followed in an earlier run, not
 * now: carrying only on a positive answer). No node twice. Errors: none.
 */
export function carrierCandidates(s: CarrierScope): { own: ServiceNode[]; others: ServiceNode[]; earlier: ServiceNode[] } {
  const own: ServiceNode[] = [];
  const others: ServiceNode[] = [];
  const earlier: ServiceNode[] = [];
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
  for (const [service, node] of s.earlier ?? []) {
    if (service === s.service || (s.tagged && !s.tagged.has(node))) continue;
    const owner = s.recordedOwnerOf?.(service);
    if (owner === undefined || !s.named(owner, node) || s.transformed(owner, node) || !s.sameTarget(owner)) continue;
    add(earlier, service, node);
  }
  return { own, others, earlier };
}
