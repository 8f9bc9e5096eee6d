// A partner Hermod on the in-process wire harness: its own WireHarness on the site's network and
// a PartnerManager following every node of the site's service, handing leaves to `sink` (`iq`:
// wraps the IQ caller the manager asks with, to see or hold its requests).

import { after, before } from 'node:test';
import type { Element } from 'ltx';
import type { IqCaller } from '../../src/component/iq-caller.ts';
import { silentLogger, type Logger } from '../../src/log.ts';
import { PartnerManager, type HistoryPositions } from '../../src/replication/partners.ts';
import type { SubscriptionClaims } from '../../src/replication/subscription-claims.ts';
import type { PartnerSink } from '../../src/sinks/sink.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { TestClient } from '../e2e/client.ts';
import { WireHarness } from './harness.ts';

/**
 * The site partners follow (pubsub.alpha.test) and alice, who publishes there: started before the
 * calling describe block, stopped after it. Read `site` and `alice` in hooks and tests.
 */
export function useSite(): { readonly site: WireHarness; readonly alice: TestClient } {
  let site: WireHarness | undefined;
  let alice: TestClient | undefined;
  before(async () => {
    site = await WireHarness.start({ jid: 'pubsub.alpha.test' });
    alice = site.client('alice@alpha.test/desk');
  });
  after(async () => {
    await site?.stop();
  });
  const started = <T>(x: T | undefined): T => {
    if (x === undefined) throw new Error('the site is not started yet');
    return x;
  };
  return {
    get site() {
      return started(site);
    },
    get alice() {
      return started(alice);
    },
  };
}

/** Starts a partner `jid` following `site`; `onEvent` sees each pub/sub event message before the manager. */
export async function startPartner(
  site: WireHarness,
  jid: string,
  sink: PartnerSink,
  options: {
    digestMs?: number;
    onEvent?: (stanza: Element) => void;
    /** Hands each pub/sub event message to `deliver` when it sees fit (late, in order: a lagging stream). */
    gate?: (stanza: Element, deliver: () => void) => void;
    positions?: HistoryPositions;
    liveBacklogItems?: number;
    iq?: (iq: IqCaller) => IqCaller;
    oneCopy?: (partner: string | undefined, node: string) => boolean;
    payloadWaitMs?: number;
    /** PartnerManagerOptions.packed (default: asked where offered). */
    packed?: boolean;
    /** The partner setting `follow` (default "all"; a function or an array is read at each discovery). */
    follow?: 'all' | 'none' | string[] | (() => 'all' | 'none' | string[]);
    /** The nodes this replication follows by default (default: every node). */
    offers?: (node: string) => boolean;
    /** Shared with the other replications on the same JID (managerOn). */
    claims?: SubscriptionClaims;
    /** The manager's logger (default: silent). */
    log?: Logger;
  } = {},
): Promise<{ harness: WireHarness; manager: PartnerManager }> {
  let manager: PartnerManager | undefined;
  // As src/app/replication.ts routes them: events, history results (XEP-0313) and §8.9.4 affiliation messages.
  const routes = new Map([
    [
      NS.PUBSUB_EVENT,
      (stanza: Element) => {
        options.onEvent?.(stanza);
        const deliver = (): void => void manager?.handleEvent(stanza);
        if (options.gate) options.gate(stanza, deliver);
        else deliver();
      },
    ],
    [NS.MAM, (stanza: Element) => void manager?.handleEvent(stanza)],
    [NS.PUBSUB, (stanza: Element) => void manager?.handleEvent(stanza)],
  ]);
  const harness = await WireHarness.start({ jid, network: site.network, messages: routes });
  manager = managerOn(site, harness, sink, options);
  return { harness, manager };
}

/**
 * A started PartnerManager on `harness` following `site` (startPartner's; another one on the same
 * harness is a second replication on the same component JID: its pub/sub events go to the first).
 */
export function managerOn(site: WireHarness, harness: WireHarness, sink: PartnerSink, options: Parameters<typeof startPartner>[3] = {}): PartnerManager {
  const manager = new PartnerManager({
    iq: options.iq ? options.iq(harness.core.iq) : harness.core.iq,
    self: harness.jid,
    settings: { partner: () => ({ follow: typeof options.follow === 'function' ? options.follow() : (options.follow ?? 'all') }), on: () => undefined },
    sink,
    log: options.log ?? silentLogger,
    intervalMs: 60_000,
    offers: options.offers ?? (() => true),
    ...(options.digestMs !== undefined ? { digestMs: options.digestMs } : {}),
    ...(options.positions ? { positions: options.positions } : {}),
    ...(options.liveBacklogItems !== undefined ? { liveBacklogItems: options.liveBacklogItems } : {}),
    ...(options.oneCopy ? { oneCopy: options.oneCopy } : {}),
    ...(options.payloadWaitMs !== undefined ? { payloadWaitMs: options.payloadWaitMs } : {}),
    ...(options.packed !== undefined ? { packed: options.packed } : {}),
    ...(options.claims ? { claims: options.claims } : {}),
  });
  manager.addPartner(site.jid);
  manager.start();
  return manager;
}

/** Runs `body` with a partner started as startPartner does, and stops it (manager, then harness) after, whatever happens. */
export async function withPartner<T>(site: WireHarness, jid: string, sink: PartnerSink, options: Parameters<typeof startPartner>[3], body: (partner: { harness: WireHarness; manager: PartnerManager }) => Promise<T>): Promise<T> {
  const partner = await startPartner(site, jid, sink, options);
  try {
    return await body(partner);
  } finally {
    await partner.manager.stop();
    await partner.harness.stop();
  }
}

/** History positions kept in memory (`saved`: "service node" -> archive id), as the store keeps them across a restart. */
export function memoryPositions(): { saved: Map<string, string>; positions: HistoryPositions } {
  const saved = new Map<string, string>();
  return {
    saved,
    positions: {
      get: async (service, node) => saved.get(`${service} ${node}`),
      set: async (service, node, id) => void saved.set(`${service} ${node}`, id),
      nodes: async (service) => [...saved.keys()].filter((k) => k.startsWith(`${service} `)).map((k) => k.slice(service.length + 1)),
    },
  };
}

/** A create request for `node` (XEP-0060 §8.1). */
export const create = (node: string): string => `<pubsub xmlns='${NS.PUBSUB}'><create node='${node}'/></pubsub>`;
/** A publish request of one Atom item `id` to `node` (XEP-0060 §7.1). */
export const publish = (node: string, id: string): string =>
  `<pubsub xmlns='${NS.PUBSUB}'><publish node='${node}'><item id='${id}'><entry xmlns='http://www.w3.org/2005/Atom'><title>${id}</title></entry></item></publish></pubsub>`;

/** Waits (polling every 10 ms) until `done` holds; fails after `timeoutMs`. */
export async function until(done: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  for (const start = Date.now(); !done(); await new Promise((r) => setTimeout(r, 10))) if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
}

/**
 * An IQ caller whose requests go through `around` (for startPartner's `iq`): it gets each request
 * (the child element) and `send`, which asks the real caller; what it returns is the answer.
 */
export function aroundRequests(around: (child: Element, send: () => Promise<Element>) => Promise<Element>): (iq: IqCaller) => IqCaller {
  return (iq) =>
    new Proxy(iq, {
      get(target, prop) {
        if (prop !== 'request') {
          const value: unknown = Reflect.get(target, prop, target);
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        }
        return (to: string, type: 'get' | 'set', child: Element, timeoutMs?: number) => around(child, () => target.request(to, type, child, timeoutMs));
      },
    });
}
