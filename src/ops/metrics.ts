// Prometheus metrics (prom-client, own registry): stanzas in and out by type, errors by
// condition, notifications queued/sent/dropped, fan-out duration, bounces, connection state,
// store size, and the process defaults (RSS, CPU, event loop lag). Served over HTTP on
// metrics.host:metrics.port (127.0.0.1 by default) at /metrics. Labels carry stanza kinds and
// error conditions only: never JIDs, payloads, URLs or secrets.
// prom-client's index loads every metric type, the Pushgateway, cluster support and the default
// process metrics with @opentelemetry/api (~150 ms of CPU at every start, before the component
// could connect): the four classes used here come from their own files, and the process
// metrics are registered at the first scrape (only a served registry is ever scraped).

import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { Element } from 'ltx';
import type * as Prom from 'prom-client';
import type { ConnectionState } from '../component/connection.ts';

const require = createRequire(import.meta.url);
const Registry = require('prom-client/lib/registry') as typeof Prom.Registry;
const Counter = require('prom-client/lib/counter') as typeof Prom.Counter;
const Gauge = require('prom-client/lib/gauge') as typeof Prom.Gauge;
const Histogram = require('prom-client/lib/histogram') as typeof Prom.Histogram;
type Counter = Prom.Counter;
type Gauge = Prom.Gauge;
type Histogram = Prom.Histogram;

const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const STATES: ConnectionState[] = ['connecting', 'online', 'offline', 'stopped'];

/** "iq-get", "message-error", "presence", … */
export function stanzaType(stanza: Element): string {
  const type = stanza.attrs.type as string | undefined;
  const kind = ['iq', 'message', 'presence'].includes(stanza.name) ? stanza.name : 'other';
  if (kind === 'iq') return ['get', 'set', 'result', 'error'].includes(type ?? '') ? `iq-${type}` : 'iq-invalid';
  return type === 'error' ? `${kind}-error` : kind;
}

/** The RFC 6120 condition of an error stanza. */
export function errorCondition(stanza: Element): string {
  const error = stanza.getChild('error');
  return error?.getChildElements().find((c) => c.getNS() === STANZAS && c.name !== 'text')?.name ?? 'undefined-condition';
}

export interface MetricsSources {
  outbox(): { unrouted: number; sent: number; dropped: number };
  /** Bytes the store takes, if cheap to know. */
  storeSize?(): Promise<number | undefined>;
}

export class HermodMetrics {
  readonly registry: Prom.Registry = new Registry();
  private defaultsRegistered = false;
  private readonly stanzasIn: Counter;
  private readonly stanzasOut: Counter;
  private readonly errors: Counter;
  private readonly queued: Counter;
  private readonly fanout: Histogram;
  private readonly bounces: Counter;
  private readonly bounceRemovals: Counter;
  private readonly state: Gauge;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    this.stanzasIn = new Counter({ name: 'hermod_stanzas_in_total', help: 'Stanzas received, by type', labelNames: ['type'], registers });
    this.stanzasOut = new Counter({ name: 'hermod_stanzas_out_total', help: 'Replies sent, by type (notifications: hermod_notifications_sent_total)', labelNames: ['type'], registers });
    this.errors = new Counter({ name: 'hermod_errors_total', help: 'Error replies sent, by condition', labelNames: ['condition'], registers });
    this.queued = new Counter({ name: 'hermod_notifications_queued_total', help: 'Notification stanzas queued for sending', registers });
    new Counter({
      name: 'hermod_notifications_sent_total',
      help: 'Notification stanzas written to the server',
      registers,
      collect() {
        this.reset();
        this.inc(sources.outbox().sent);
      },
    });
    new Counter({
      name: 'hermod_notifications_dropped_total',
      help: 'Notification stanzas dropped because the outbox was full',
      registers,
      collect() {
        this.reset();
        this.inc(sources.outbox().dropped);
      },
    });
    new Gauge({
      name: 'hermod_outbox_pending',
      help: 'Notification stanzas the XMPP server has not routed yet (queued or in flight)',
      registers,
      collect() {
        this.set(sources.outbox().unrouted);
      },
    });
    this.fanout = new Histogram({
      name: 'hermod_fanout_duration_seconds',
      help: 'Time to render and queue the notifications of one event',
      labelNames: ['event'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    this.bounces = new Counter({ name: 'hermod_bounces_total', help: 'Messages that came back as errors, by condition', labelNames: ['condition'], registers });
    this.bounceRemovals = new Counter({ name: 'hermod_bounce_unsubscribed_total', help: 'Subscriptions removed after repeated bounces', registers });
    this.state = new Gauge({ name: 'hermod_connection_state', help: 'Component connection state (1 for the current one)', labelNames: ['state'], registers });
    this.connection('offline');
    if (sources.storeSize) {
      const size = sources.storeSize;
      new Gauge({
        name: 'hermod_store_size_bytes',
        help: 'Size of the store on disk (LevelDB files, or the CouchDB database file)',
        registers,
        async collect() {
          const bytes = await size().catch(() => undefined);
          if (bytes !== undefined) this.set(bytes);
        },
      });
    }
  }

  received(stanza: Element): void {
    this.stanzasIn.inc({ type: stanzaType(stanza) });
  }

  replied(stanza: Element): void {
    const type = stanzaType(stanza);
    this.stanzasOut.inc({ type });
    if (stanza.attrs.type === 'error') this.errors.inc({ condition: errorCondition(stanza) });
  }

  notified(event: string, stanzas: number, seconds: number): void {
    this.queued.inc(stanzas);
    this.fanout.observe({ event }, seconds);
  }

  bounced(condition: string): void {
    this.bounces.inc({ condition });
  }

  unsubscribedAfterBounces(count: number): void {
    this.bounceRemovals.inc(count);
  }

  connection(current: ConnectionState): void {
    for (const s of STATES) this.state.set({ state: s }, s === current ? 1 : 0);
  }

  /** The registry's text, with the process metrics (RSS, CPU, event loop lag, GC) registered at the first call. */
  async scrape(): Promise<string> {
    if (!this.defaultsRegistered) {
      this.defaultsRegistered = true;
      (require('prom-client/lib/defaultMetrics') as typeof Prom.collectDefaultMetrics)({ register: this.registry, prefix: 'hermod_' });
    }
    return this.registry.metrics();
  }

  /** Serves /metrics; resolves once listening (rejects if the port cannot be bound). */
  async serve(host: string, port: number): Promise<Server> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      this.scrape().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(err)}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server;
  }
}
