// The outgoing queue for notifications. Fan-out pushes serialized stanzas here and returns at
// once; the outbox writes them to the socket in large chunks, waits for 'drain' when the socket
// pushes back, and holds them while the component is disconnected (bounded: past the limit the
// oldest are dropped and counted). Request replies do not queue behind it.

import type { Logger } from '../log.ts';

export interface OutboxSocket {
  write(chunk: string): boolean;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  removeListener(event: 'drain' | 'close', listener: () => void): unknown;
}

export interface OutboxOptions {
  /** Most stanzas held while disconnected or backed up. */
  limit?: number;
  /** Bytes joined into one socket write. */
  chunkBytes?: number;
  log: Logger;
}

export class Outbox {
  private queue: string[] = [];
  private head = 0;
  private socket: OutboxSocket | undefined;
  private waitingDrain = false;
  private scheduled = false;
  private drainedWaiters: Array<() => void> = [];
  private readonly limit: number;
  private readonly chunkBytes: number;
  private readonly log: Logger;
  dropped = 0;
  sent = 0;

  constructor(options: OutboxOptions) {
    this.limit = options.limit ?? 250_000;
    this.chunkBytes = options.chunkBytes ?? 64 * 1024;
    this.log = options.log;
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  /** Start writing to a (newly connected) socket. */
  attach(socket: OutboxSocket): void {
    this.socket = socket;
    this.waitingDrain = false;
    this.schedule();
  }

  /** Stop writing: the socket is gone; what is queued waits for the next attach. */
  detach(): void {
    this.socket = undefined;
    this.waitingDrain = false;
  }

  push(stanzas: string[]): void {
    for (const s of stanzas) this.queue.push(s);
    const excess = this.pending - this.limit;
    if (excess > 0) {
      this.head += excess;
      this.dropped += excess;
      this.log.warn('outbox full: dropped oldest notifications', { dropped: excess, limit: this.limit });
    }
    this.schedule();
  }

  /** Resolves when everything queued has been handed to the socket (or at once when detached). */
  drained(): Promise<void> {
    if (this.pending === 0 || !this.socket) return Promise.resolve();
    return new Promise((resolve) => this.drainedWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled || !this.socket || this.waitingDrain || this.pending === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const socket = this.socket;
    while (socket && this.socket === socket && !this.waitingDrain && this.pending > 0) {
      let chunk = '';
      let count = 0;
      while (this.head < this.queue.length && chunk.length < this.chunkBytes) {
        chunk += this.queue[this.head++];
        count++;
      }
      this.sent += count;
      if (this.head > 4096 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      if (!socket.write(chunk)) {
        this.waitingDrain = true;
        const onDrain = (): void => {
          socket.removeListener('close', onDrain);
          if (this.socket !== socket) return;
          this.waitingDrain = false;
          this.schedule();
        };
        socket.once('drain', onDrain);
        socket.once('close', onDrain);
      }
    }
    if (this.pending === 0) {
      this.queue = [];
      this.head = 0;
      const waiters = this.drainedWaiters;
      this.drainedWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }
}
