// Follows a CouchDB database's `_changes` feed (feed=continuous, with heartbeats) from a
// sequence: from "now" when started without one, which is what cache invalidation needs (what
// was changed before is read fresh anyway). When the connection ends or fails it reconnects
// from the last sequence it saw, so no change is skipped; failures go to `onError` and are
// retried after a growing pause (100 ms to 5 s). A connection that stays silent for three
// heartbeats (a CouchDB or proxy that stopped sending without closing: no heartbeat newline
// either) is dropped and opened again, rather than waiting for the socket's own idle timeout
// (undici: 300 s) with every change meanwhile unseen. Credentials in the URL become a Basic
// Authorization header (fetch refuses them in URLs) and never appear in errors.

export interface FeedRow {
  /** The document id. */
  id: string;
  /** Its current (winning) revision. */
  rev: string;
  deleted: boolean;
}

export interface ChangeFeedOptions {
  /** CouchDB server URL (may carry user:password@). */
  url: string;
  db: string;
  /** The changes of one read of the feed, in sequence order. */
  onRows: (rows: FeedRow[]) => void;
  /** A failed connection (retried). */
  onError?: (err: Error) => void;
  /** Heartbeat the server sends while idle, ms (default 10 000). */
  heartbeatMs?: number;
}

import { COUCH_REQUEST_TIMEOUT_MS } from './couch-answers.ts';

const MIN_PAUSE_MS = 100;
/** Heartbeats missed in a row after which a connection counts as dead. */
const SILENT_HEARTBEATS = 3;
const MAX_PAUSE_MS = 5_000;

/** A `_changes` follower: start() once, stop() once. */
export class ChangeFeed {
  private readonly base: string;
  /** Uncompressed: a compressed stream would hold the changes back until its buffer fills. */
  private readonly headers: Record<string, string> = { 'accept-encoding': 'identity' };
  private seq: string | undefined;
  private stopped = false;
  private controller: AbortController | undefined;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly options: ChangeFeedOptions) {
    const u = new URL(options.url);
    if (u.username || u.password) {
      this.headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`;
      u.username = '';
      u.password = '';
    }
    this.base = `${u.toString().replace(/\/$/, '')}/${encodeURIComponent(options.db)}`;
  }

  /** The last sequence seen (opaque), or undefined before start(). */
  get since(): string | undefined {
    return this.seq;
  }

  /**
   * Reads the database's current sequence (changes after it are delivered), then follows in
   * the background. Rejects when the database cannot be read.
   */
  async start(): Promise<void> {
    const res = await fetch(this.base, { headers: this.headers, signal: AbortSignal.timeout(COUCH_REQUEST_TIMEOUT_MS) });
    if (!res.ok) throw new Error(`CouchDB ${this.options.db}: reading the update sequence failed: HTTP ${res.status}`);
    this.seq = String(((await res.json()) as { update_seq: string | number }).update_seq);
    this.running = this.loop();
  }

  /** Stops following (the open request is aborted); resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    let pause = MIN_PAUSE_MS;
    while (!this.stopped) {
      try {
        if (await this.follow()) pause = MIN_PAUSE_MS;
      } catch (err) {
        if (this.stopped) break;
        this.options.onError?.(err instanceof Error ? err : new Error(String(err)));
      }
      // Also when the server (or a proxy) ended the stream normally: never a tight reconnect loop.
      if (this.stopped) break;
      await this.sleep(pause);
      pause = Math.min(MAX_PAUSE_MS, pause * 2);
    }
  }

  /** Waits `ms` (stop() ends it at once). */
  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** One continuous connection until the server ends it; resolves true when it delivered anything. */
  private async follow(): Promise<boolean> {
    const controller = new AbortController();
    this.controller = controller;
    const heartbeatMs = this.options.heartbeatMs ?? 10_000;
    const silentMs = heartbeatMs * SILENT_HEARTBEATS;
    let watchdog: NodeJS.Timeout | undefined;
    // From the request on, every chunk (a heartbeat is one) re-arms it.
    const arm = (): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(new Error(`CouchDB ${this.options.db}: the _changes feed sent nothing for ${silentMs} ms (${SILENT_HEARTBEATS} heartbeats); reconnecting`)), silentMs);
    };
    let delivered = false;
    try {
      arm();
      const params = new URLSearchParams({ feed: 'continuous', heartbeat: String(heartbeatMs), since: this.seq ?? 'now' });
      const res = await fetch(`${this.base}/_changes?${params}`, { headers: this.headers, signal: controller.signal });
      if (!res.ok || !res.body) throw new Error(`CouchDB ${this.options.db}: following _changes failed: HTTP ${res.status}`);
      const decoder = new TextDecoder();
      let buffered = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        arm();
        buffered += decoder.decode(chunk, { stream: true });
        const lines = buffered.split('\n');
        buffered = lines.pop() ?? '';
        const rows: FeedRow[] = [];
        // The sequence moves past these rows only once onRows has taken them: a row whose
        // handling threw is read again after the reconnect (its invalidation is never lost).
        let seq = this.seq;
        for (const line of lines) {
          if (line.trim() === '') continue; // heartbeat
          const change = JSON.parse(line) as { id?: string; seq?: string | number; last_seq?: string | number; deleted?: boolean; changes?: Array<{ rev: string }> };
          if (change.last_seq !== undefined) seq = String(change.last_seq);
          if (change.id === undefined || change.seq === undefined) continue;
          seq = String(change.seq);
          rows.push({ id: change.id, rev: change.changes?.[0]?.rev ?? '', deleted: change.deleted === true });
        }
        if (rows.length > 0) {
          delivered = true;
          this.options.onRows(rows);
        }
        this.seq = seq;
      }
    } catch (err) {
      if (this.stopped) return delivered;
      // An abort rejects with the reason given (the watchdog's error), or an AbortError naming none.
      throw controller.signal.aborted && controller.signal.reason instanceof Error ? controller.signal.reason : err;
    } finally {
      clearTimeout(watchdog);
    }
    return delivered;
  }
}
