// Which partner each partner service belonged to at its last discovery, kept durably (the
// replication state) so that right after a restart — before discovery has found the services
// again — the carrier lookup (carriers.ts) can tell the nodes a current partner's service was
// followed on in an earlier run from those of a removed partner or a service the partner left.
// Written when discovery finds a partner's services (only what changed), forgotten when the
// partner is removed or no longer has the service. A store that cannot be written costs only the
// restart window this closes (logged); nothing else reads it.

import type { Logger } from '../log.ts';

/** Durable service -> partner records (ReplicationState.serviceOwners / setServiceOwner). */
export interface ServiceOwnerRecords {
  /** Every record: service JID -> partner (contact JID). */
  load(): Promise<Map<string, string>>;
  /** Records the partner of a service; undefined forgets it. */
  set(service: string, partner: string | undefined): Promise<void>;
}

export class ServiceOwners {
  private readonly recorded = new Map<string, string>();
  private loaded: Promise<void> = Promise.resolve();

  constructor(
    private readonly records: ServiceOwnerRecords | undefined,
    private readonly log: Pick<Logger, 'warn'>,
  ) {}

  /** Reads the records (once, at start); what discovery records meanwhile is kept. Errors: logged. */
  load(): void {
    if (!this.records) return;
    const records = this.records;
    this.loaded = records
      .load()
      .then((all) => {
        for (const [service, partner] of all) if (!this.recorded.has(service)) this.recorded.set(service, partner);
      })
      .catch((err: unknown) => this.log.warn('the recorded partners of services could not be read', { reason: String(err) }));
  }

  /** The partners with a recorded service. */
  owners(): Set<string> {
    return new Set(this.recorded.values());
  }

  /** The partner a service belonged to at its last discovery (this run's or an earlier one's), if recorded. */
  ownerOf(service: string): string | undefined {
    return this.recorded.get(service);
  }

  /**
   * Discovery found `services` for `partner`: recorded (what changed); its recorded services
   * neither found nor `unsure` (JIDs whose disco#info got no answer that says: kept) are forgotten.
   */
  async found(partner: string, services: readonly string[], unsure: readonly string[] = []): Promise<void> {
    await this.loaded;
    const changes: Array<[string, string | undefined]> = [];
    for (const service of services) if (this.recorded.get(service) !== partner) changes.push([service, partner]);
    for (const [service, owner] of this.recorded) if (owner === partner && !services.includes(service) && !unsure.includes(service)) changes.push([service, undefined]);
    await this.apply(changes);
  }

  /** The partner was removed: its services are forgotten. */
  async removed(partner: string): Promise<void> {
    await this.loaded;
    const changes: Array<[string, string | undefined]> = [];
    for (const [service, owner] of this.recorded) if (owner === partner) changes.push([service, undefined]);
    await this.apply(changes);
  }

  private async apply(changes: Array<[string, string | undefined]>): Promise<void> {
    for (const [service, partner] of changes) {
      if (partner === undefined) this.recorded.delete(service);
      else this.recorded.set(service, partner);
      try {
        await this.records?.set(service, partner);
      } catch (err) {
        this.log.warn('the partner of a service could not be recorded', { service, partner, reason: String(err) });
      }
    }
  }
}
