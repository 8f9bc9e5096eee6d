// The XEP-0114 connection: handshake, reconnect with exponential backoff (each state change
// logged), stanza intake, replies, and the outbox for notifications. A fresh @xmpp
// component-core entity is used per connection attempt, so no half-closed state carries over.
//
// A server that is not there (refused, unreachable) is retried forever, as a daemon under
// systemd should: the first failure of a run of failures is logged at error level naming the
// config key (component.server), the address and what to check; the retries that follow at warn.
// A refused secret is logged at error level every time.

import { Component } from '@xmpp/component-core';
import type { Element } from 'ltx';
import type { Logger } from '../log.ts';
import { withStreamParser } from '../xmpp/parser.ts';
import type { Outbox } from './outbox.ts';

export type ConnectionState = 'connecting' | 'online' | 'offline' | 'stopped';

export interface ConnectionOptions {
  jid: string;
  secret: string;
  /** xmpp://host:port of the server's component listener. */
  server: string;
  log: Logger;
  /** Queued notifications, built before the connection (src/component/outbox.ts): attached while online. */
  outbox: Outbox;
  backoff?: { initialMs?: number; maxMs?: number };
  /** How long one attempt (TCP + stream + handshake) may take. */
  attemptTimeoutMs?: number;
}

/** What the connection hands its stanzas and state changes to; given to `start`. */
export interface ConnectionHandlers {
  /** Called for every incoming stanza; the resolved element, if any, is sent back. */
  onStanza: (stanza: Element) => Promise<Element | undefined>;
  onStateChange?: (state: ConnectionState) => void;
}

export class ComponentConnection {
  readonly outbox: Outbox;
  private handlers: ConnectionHandlers | undefined;
  private entity: Component | undefined;
  private state: ConnectionState = 'offline';
  private stopping = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private delay: number;
  /** Failed attempts since the component was last online. */
  private failures = 0;
  private readonly initialDelay: number;
  private readonly maxDelay: number;
  private firstOnline: Promise<void>;
  private resolveFirstOnline!: () => void;

  constructor(private readonly options: ConnectionOptions) {
    this.outbox = options.outbox;
    this.initialDelay = options.backoff?.initialMs ?? 250;
    this.maxDelay = options.backoff?.maxMs ?? 30_000;
    this.delay = this.initialDelay;
    this.firstOnline = new Promise((resolve) => (this.resolveFirstOnline = resolve));
  }

  get status(): ConnectionState {
    return this.state;
  }

  /** The condition of the stream error the server ended the last connection with (e.g. `system-shutdown`); undefined while online or when it gave none. */
  get lastStreamError(): string | undefined {
    return this.streamError;
  }

  private streamError: string | undefined;

  /**
   * Starts connecting (and reconnecting with backoff until `stop`); stanzas and state changes go
   * to `handlers`. Resolves once the component is online for the first time. Call once.
   */
  start(handlers: ConnectionHandlers): Promise<void> {
    if (this.handlers) throw new Error('ComponentConnection.start: already started');
    this.handlers = handlers;
    void this.attempt();
    return this.firstOnline;
  }

  /** Sends a stanza now if online; returns false if it could not be sent. */
  send(stanza: Element): boolean {
    const entity = this.entity;
    if (!entity || this.state !== 'online') return false;
    entity.send(stanza).catch((err: unknown) => this.options.log.warn('send failed', { err: String(err) }));
    return true;
  }

  private setState(state: ConnectionState, fields: Record<string, unknown> = {}): void {
    if (this.state === state) return;
    this.state = state;
    const level = state === 'offline' ? 'warn' : 'info';
    this.options.log[level](`component ${state}`, { jid: this.options.jid, server: this.options.server, ...fields });
    this.handlers?.onStateChange?.(state);
  }

  private async attempt(): Promise<void> {
    if (this.stopping) return;
    const { jid, secret, server, log } = this.options;
    this.setState('connecting');
    const entity = withStreamParser(new Component({ service: server, domain: jid })); // linear on long text, bounded stanzas
    this.entity = entity;
    let handshakeError: string | undefined;
    entity.on('open', (el: Element) => {
      entity.authenticate(el.attrs.id as string, secret).catch((err: unknown) => {
        handshakeError = String(err);
      });
    });
    entity.on('error', (err: Error & { condition?: string }) => {
      if (err.condition === 'not-authorized') handshakeError = 'the server refused the component secret (not-authorized)';
      if (err.condition !== undefined && this.entity === entity) this.streamError = err.condition;
      log.debug('component stream error', { err: err.message, condition: err.condition });
    });
    entity.on('stanza', (stanza: Element) => {
      if (this.outbox.acknowledge(stanza)) return; // our own barrier, back from the server
      const handlers = this.handlers;
      if (!handlers) return;
      handlers
        .onStanza(stanza)
        .then((reply) => {
          if (reply && !this.send(reply)) log.warn('reply lost: component offline', { to: reply.attrs.to });
        })
        .catch((err: unknown) => log.error('stanza handling failed', { err: String(err) }));
    });
    entity.on('disconnect', () => this.onDisconnect(entity));

    try {
      await startWithin(entity, this.options.attemptTimeoutMs ?? 10_000);
      if (this.stopping || this.entity !== entity) return;
      this.delay = this.initialDelay;
      this.failures = 0;
      this.streamError = undefined;
      this.setState('online');
      // Stanzas are written whole (the outbox batches fan-out itself): no Nagle delay on replies.
      entity.socket?.setNoDelay(true);
      if (entity.socket) this.outbox.attach(entity.socket);
      this.resolveFirstOnline();
    } catch (err) {
      if (this.entity !== entity) return;
      const reason = handshakeError ?? describeConnectFailure(err, server);
      this.failures += 1;
      const fields = { key: handshakeError ? 'component.secret' : 'component.server', server, reason, failures: this.failures, retryInMs: this.delay };
      (handshakeError || this.failures === 1 ? log.error : log.warn)('component connection failed', fields);
      this.discard(entity);
      this.scheduleRetry();
    }
  }

  private onDisconnect(entity: Component): void {
    if (this.entity !== entity) return;
    this.outbox.detach();
    this.discard(entity);
    if (this.stopping) return;
    this.setState('offline', { retryInMs: this.delay });
    this.scheduleRetry();
  }

  private discard(entity: Component): void {
    entity.removeAllListeners();
    entity.on('error', () => {}); // late socket errors of a dead entity must not crash the process
    entity.socket?.destroy();
    if (this.entity === entity) this.entity = undefined;
  }

  private scheduleRetry(): void {
    if (this.stopping) return;
    clearTimeout(this.retryTimer);
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.maxDelay);
    this.retryTimer = setTimeout(() => void this.attempt(), delay);
  }

  /** Flushes queued notifications (bounded), closes the stream and stops reconnecting. */
  async stop(flushTimeoutMs = 5_000): Promise<void> {
    this.stopping = true;
    clearTimeout(this.retryTimer);
    const entity = this.entity;
    if (entity && this.state === 'online') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.outbox.drained(), new Promise((resolve) => (timer = setTimeout(resolve, flushTimeoutMs)))]);
      clearTimeout(timer);
      this.outbox.settle(); // the server stays up: what it routed is delivered
      if (this.outbox.pending > 0) this.options.log.warn('stopping with notifications unsent', { pending: this.outbox.pending });
      // Nothing more is written once the stream is being closed (RFC 6120 §4.4: no stanza after
      // the closing tag); what is pushed from now on waits in the journal.
      this.outbox.detach();
      try {
        await entity.stop();
      } catch (err) {
        this.options.log.debug('stream close', { err: String(err) });
      }
    }
    if (entity) this.discard(entity);
    this.outbox.detach();
    this.setState('stopped');
  }
}

/**
 * One XEP-0114 handshake, then close (for `hermod check`): resolves when the server accepted
 * the component, rejects with a readable reason (never the secret) otherwise.
 */
export async function checkHandshake(options: { jid: string; secret: string; server: string; timeoutMs?: number }): Promise<void> {
  const entity = withStreamParser(new Component({ service: options.server, domain: options.jid }));
  let handshakeError: string | undefined;
  entity.on('open', (el: Element) => {
    entity.authenticate(el.attrs.id as string, options.secret).catch((err: unknown) => (handshakeError = String(err)));
  });
  entity.on('error', (err: Error & { condition?: string }) => {
    if (err.condition === 'not-authorized') handshakeError = 'the server refused the component secret (not-authorized)';
    else if (err.condition) handshakeError ??= `the server closed the stream: ${err.condition}`;
  });
  try {
    await startWithin(entity, options.timeoutMs ?? 10_000);
  } catch (err) {
    throw new Error(handshakeError ?? describeConnectFailure(err, options.server));
  } finally {
    entity.removeAllListeners();
    entity.on('error', () => {});
    await entity.stop().catch(() => {});
    entity.socket?.destroy();
  }
}

/**
 * Why a connection attempt to `server` (xmpp://host:port) failed, in words an operator can act
 * on: the socket error code (ECONNREFUSED …) turned into what it means and what to check.
 */
export function describeConnectFailure(err: unknown, server: string): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const address = server.replace(/^xmpp:\/\//, '');
  switch (code) {
    case 'ECONNREFUSED':
      return `nothing is listening at ${address} (ECONNREFUSED, connection refused): is the XMPP server running, with its component listener on that address and port?`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot resolve the host of ${address} (${code})`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${address} is unreachable (${code})`;
    case 'ETIMEDOUT':
      return `connecting to ${address} timed out (${code}): a firewall, or the wrong address?`;
    case undefined:
      return err instanceof Error ? err.message : String(err);
    default:
      return `cannot connect to ${address}: ${code}`;
  }
}

/** Connects, opens the stream and waits for the handshake, failing after `timeoutMs`. */
async function startWithin(entity: Component, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      entity.start(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no handshake within ${timeoutMs} ms`)), timeoutMs);
        timer.unref(); // an attempt abandoned by stop() must not hold the process open until it times out
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
