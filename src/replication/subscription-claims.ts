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
  /**
   * The service no longer has our subscription to `node` (found by another holder): its follow of
   * the node ends here without an unsubscribe, and the node is followed again — from its saved
   * position — by a discovery soon. Without this, the notifications of the subscription the
   * other holder makes anew would reach its old follow and move its position past what was
   * published while there was none.
   */
  lost?(service: string, node: string): void;
}

export class SubscriptionClaims {
  private readonly holders = new Set<ClaimHolder>();
  /** Unsubscribes under way, by "service NUL node". */
  private readonly ending = new Map<string, Promise<void>>();

  /**
   * Runs `unsubscribe` (the request ending our subscription to the node) so that a subscribe to
   * that node waits for its answer (`settled`): sent later on the same stream, a partner that
   * handles stanzas concurrently (a cluster) could still apply the subscribe first. Resolves or
   * rejects as `unsubscribe` does.
   */
  unsubscribing(service: string, node: string, unsubscribe: () => Promise<void>): Promise<void> {
    const k = `${service}\0${node}`;
    const ending: Promise<void> = unsubscribe().finally(() => {
      if (this.ending.get(k) === ending) this.ending.delete(k);
    });
    this.ending.set(k, ending);
    return ending;
  }

  /** Resolves once an unsubscribe from the node under way has been answered (never rejects). */
  async settled(service: string, node: string): Promise<void> {
    await this.ending.get(`${service}\0${node}`)?.catch(() => undefined);
  }

  /** Registers a holder for the process's life. */
  add(holder: ClaimHolder): void {
    this.holders.add(holder);
  }

  /** Tells every holder but `finder` that follows the node that our subscription to it is gone at the service (ClaimHolder.lost). */
  lost(finder: ClaimHolder, service: string, node: string): void {
    for (const holder of this.holders) if (holder !== finder && holder.follows(service, node)) holder.lost?.(service, node);
  }

  /** Whether a holder other than `asking` follows the node. */
  byOthers(asking: ClaimHolder, service: string, node: string): boolean {
    for (const holder of this.holders) if (holder !== asking && holder.follows(service, node)) return true;
    return false;
  }
}
