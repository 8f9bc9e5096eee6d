// Which of the component JID's subscriptions at partners' services are in use. Ajatus and Midgard
// replication share one component JID, and so one subscription to a node both follow: one of
// them ending a subscription the other follows would silence that node for the other (it keeps
// it in memory and never subscribes again). Each PartnerManager registers here and, before
// ending a subscription it no longer follows (dropped from its follow list, left by an earlier
// run), asks whether another one follows it. A node another one wants but does not follow yet
// needs no such care: its follow subscribes (after our unsubscribe, which is sent first).

/** One replication's subscriptions (a PartnerManager). */
export interface ClaimHolder {
  /** Whether it follows `node` of `service` now (from before its subscribe is sent; still while it stops). */
  follows(service: string, node: string): boolean;
}

export class SubscriptionClaims {
  private readonly holders = new Set<ClaimHolder>();

  /** Registers a holder for the process's life. */
  add(holder: ClaimHolder): void {
    this.holders.add(holder);
  }

  /** Whether a holder other than `asking` follows the node. */
  byOthers(asking: ClaimHolder, service: string, node: string): boolean {
    for (const holder of this.holders) if (holder !== asking && holder.follows(service, node)) return true;
    return false;
  }
}
