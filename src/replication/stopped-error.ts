// The error a partner's replication work ends with when it is stopped (PartnerManager.stop()).

/** A catch-up (or a wait of it) ended by stop(): the node's position is where the last applied page left it; the next start goes on from there. */
export class StoppedError extends Error {
  constructor() {
    super('replication stopping: catch-up interrupted (continued at the next start)');
  }
}
