// Which of the component JID's subscriptions at partners' services are in use. Ajatus and Midgard
// replication share one component JID, so a subscription at a partner's service belongs to
// whichever replication follows (or wants) that node: one of them ending a subscription the
// other uses would silence that node for the other (it keeps it in memory and never subscribes
// again). Each PartnerManager registers here and, before ending a subscription nobody in it
// follows any more (left by an earlier run), asks whether another one uses it — and leaves it
// while another cannot tell yet (its first discovery round has not ended).

/** One replication's view of the subscriptions it uses (a PartnerManager). */
export interface ClaimHolder {
  /**
   * Whether it uses the subscription to `node` of `service`: true when it follows the node, or
   * its last discovery of that service wanted it; false when neither; undefined while it cannot
   * tell (its first discovery round has not ended).
   */
  claims(service: string, node: string): boolean | undefined;
  /** Another holder can now tell what it uses: end what nobody uses (when this one can tell too). */
  sweepSoon(): void;
}

export class SubscriptionClaims {
  private readonly holders = new Set<ClaimHolder>();

  /** Registers a holder; the answer unregisters it. */
  add(holder: ClaimHolder): () => void {
    this.holders.add(holder);
    return () => void this.holders.delete(holder);
  }

  /** Whether a holder other than `asking` uses the subscription: true, false, or undefined while one cannot tell yet. */
  byOthers(asking: ClaimHolder, service: string, node: string): boolean | undefined {
    let unknown = false;
    for (const holder of this.holders) {
      if (holder === asking) continue;
      const claim = holder.claims(service, node);
      if (claim === true) return true;
      if (claim === undefined) unknown = true;
    }
    return unknown ? undefined : false;
  }

  /** `from` has ended its first discovery round: the others may end what nobody uses now. */
  ready(from: ClaimHolder): void {
    for (const holder of this.holders) if (holder !== from) holder.sweepSoon();
  }
}
