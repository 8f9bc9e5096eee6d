// The end-to-end fixture: a Site owns everything a test file starts — a temp dir, the XMPP
// servers (src/devenv/env.ts), pouchdb-servers, private dbus-daemons, Hermod processes and
// logged-in users — and tears all of it down by PID in `stop()`, also when `before` failed
// half-way or a test failed (`useSite` registers both hooks). Plus the request and form builders
// the suites share (node configuration, publish-options, subscription options, MAM), written
// from the XEPs' examples.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import type { Element } from 'ltx';
import {
  startCouch,
  startDbus,
  startHermodProcess,
  startXmppEnv,
  type CouchServer,
  type DbusDaemon,
  type EnvOptions,
  type HermodProcess,
  type HermodProcessOptions,
  type ServerInfo,
  type XmppEnv,
} from '../../src/devenv/index.ts';
import { NODE_CONFIG, PUBLISH_OPTIONS, submitForm } from '../fixtures/node-config-registry.ts';
import { OWNER, PASSWORD, PUBSUB, TestClient } from './client.ts';

export interface SiteOptions extends EnvOptions {
  /** Names the temp dir: hermod-<name>-XXXXXX. */
  name: string;
  /** Start the XMPP servers (default true; `prosody`/`ejabberd` choose which). */
  xmpp?: boolean;
  /** How many pouchdb-servers to start with the site (`site.couches`). */
  couches?: number;
}

/** What `site.hermod()` takes: HermodProcessOptions, `dir` defaulting to the site's. */
export type SiteHermodOptions = Omit<HermodProcessOptions, 'dir'> & { dir?: string };

/** Everything one test file (or suite) runs against; see the file comment. */
export class Site {
  private dirPath: string | undefined;
  private xmpp: XmppEnv | undefined;
  readonly couches: CouchServer[] = [];
  /** Every Hermod started here, in order (restarts included). */
  readonly hermods: HermodProcess[] = [];
  private readonly clients: TestClient[] = [];
  private readonly buses: DbusDaemon[] = [];
  private readonly registered = new Set<string>();
  private readonly teardown: Array<() => Promise<unknown>> = [];
  private stopping: Promise<void> | undefined;

  constructor(readonly options: SiteOptions) {}

  /** Makes the temp dir, starts the servers and pouchdb-servers (in parallel). */
  async start(): Promise<this> {
    const { name, xmpp = true, couches = 0, ...env } = this.options;
    this.dirPath = await mkdtemp(path.join(tmpdir(), `hermod-${name}-`));
    const servers = xmpp ? startXmppEnv(env).then((e) => (this.xmpp = e)) : undefined;
    const dbs = Array.from({ length: couches }, () => startCouch().then((c) => void this.couches.push(c)));
    const started = await Promise.allSettled([servers, ...dbs]);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return this;
  }

  get dir(): string {
    if (this.dirPath === undefined) throw new Error('the site is not started');
    return this.dirPath;
  }

  get env(): XmppEnv {
    if (!this.xmpp) throw new Error('the site has no XMPP servers');
    return this.xmpp;
  }

  /** Prosody (alpha.test). */
  get alpha(): ServerInfo {
    if (!this.env.alpha) throw new Error('the site has no Prosody');
    return this.env.alpha;
  }

  /** ejabberd (beta.test). */
  get beta(): ServerInfo {
    if (!this.env.beta) throw new Error('the site has no ejabberd');
    return this.env.beta;
  }

  /** The pouchdb-server number `i` started with the site. */
  couch(i = 0): CouchServer {
    const couch = this.couches[i];
    if (!couch) throw new Error(`the site has no pouchdb-server #${i}`);
    return couch;
  }

  /** Starts `hermod start` (files under the site's dir unless `dir` is given); stopped with the site. */
  async hermod(o: SiteHermodOptions): Promise<HermodProcess> {
    const hermod = await startHermodProcess({ ...o, dir: o.dir ?? this.dir });
    this.hermods.push(hermod);
    return hermod;
  }

  /** `user` on `server` (registered the first time, password PASSWORD), logged in as `resource` (default "test"); stopped with the site. */
  async user(server: ServerInfo, user: string, resource?: string): Promise<TestClient> {
    const key = `${user}@${server.domain}`;
    if (!this.registered.has(key)) {
      await this.env.register(server, user, PASSWORD);
      this.registered.add(key);
    }
    const client = await TestClient.connect(server, user, PASSWORD, resource);
    this.clients.push(client);
    return client;
  }

  /** A private dbus-daemon with its socket under `<dir>/<label>`; stopped with the site. */
  async dbus(label: string): Promise<DbusDaemon> {
    const bus = await startDbus(path.join(this.dir, label));
    this.buses.push(bus);
    return bus;
  }

  /** Runs `stop` first when the site stops (latest first): for what a test started itself. */
  onStop(stop: () => Promise<unknown>): void {
    this.teardown.push(stop);
  }

  /**
   * Stops what `onStop` registered, then everything else (clients, Hermods — SIGKILL by PID if SIGTERM fails —, dbus-daemons, the
   * servers, pouchdb-servers) and removes the temp dir unless HERMOD_KEEP_TMP is set. Never throws.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const stop of [...this.teardown].reverse()) await stop().catch(() => undefined);
      await Promise.all(this.clients.map((c) => c.stop()));
      await Promise.all(this.hermods.map((h) => h.stop().catch(() => h.kill())));
      await Promise.all(this.buses.map((b) => b.stop().catch(() => undefined)));
      await Promise.all([this.xmpp?.stop(), ...this.couches.map((c) => c.destroy().catch(() => undefined))]);
      if (this.dirPath && !process.env.HERMOD_KEEP_TMP) await rm(this.dirPath, { recursive: true, force: true });
    })();
    return this.stopping;
  }
}

/**
 * A Site started in a `before` hook and stopped in an `after` hook of the enclosing suite (or
 * file), then `setup(site)` in the same hook. In a `describe`, a later `before` of the file runs
 * after it; at the top level of a file (where Node 20 does not wait for one `before` hook before
 * starting the next) put the file's setup in `setup`.
 */
export function useSite(options: SiteOptions, setup?: (site: Site) => Promise<void>): Site {
  const site = new Site(options);
  before(async () => {
    await site.start();
    await setup?.(site);
  });
  after(() => site.stop());
  return site;
}

// ---------------------------------------------------------------------------------------------
// data forms (XEP-0004 submit forms) and pub/sub requests (XEP-0060), as the XEPs write them

export const SUBSCRIBE_OPTIONS = 'http://jabber.org/protocol/pubsub#subscribe_options';
export const MAM = 'urn:xmpp:mam:2';

/** Field values by name; a node configuration's names may leave out the "pubsub#" prefix. */
export type FormFields = Record<string, string | readonly string[]>;

const form = (formType: string, fields: FormFields, prefix: string): string =>
  submitForm(
    formType,
    Object.entries(fields).map(([name, value]) => ({ var: name.includes('#') || name.startsWith('{') ? name : `${prefix}${name}`, values: typeof value === 'string' ? [value] : value })),
  );

/** A pubsub#node_config submit form (§16.4.3). */
export const nodeConfigForm = (fields: FormFields): string => form(NODE_CONFIG, fields, 'pubsub#');
/** A pubsub#publish-options submit form (§7.1.5). */
export const publishOptionsForm = (fields: FormFields): string => form(PUBLISH_OPTIONS, fields, 'pubsub#');
/** A pubsub#subscribe_options submit form (§6.3). */
export const subscribeOptionsForm = (fields: FormFields): string => form(SUBSCRIBE_OPTIONS, fields, 'pubsub#');
/** A XEP-0313 query form (start, end, with, after-id, …). */
export const mamForm = (fields: FormFields): string => form(MAM, fields, '');

/** An Atom entry whose title is `text`. */
export const entry = (text: string): string => `<entry xmlns='http://www.w3.org/2005/Atom'><title>${text}</title></entry>`;
/** Create `node`, configured with `fields` if given (§8.1.3). */
export const create = (node: string, fields?: FormFields): string =>
  `<pubsub xmlns='${PUBSUB}'><create node='${node}'/>${fields ? `<configure>${nodeConfigForm(fields)}</configure>` : ''}</pubsub>`;
/** Configure `node` (§8.2.4). */
export const configure = (node: string, fields: FormFields): string => `<pubsub xmlns='${OWNER}'><configure node='${node}'>${nodeConfigForm(fields)}</configure></pubsub>`;
/** Publish one item (id `id`, or none: the service makes one) with an entry titled `text` (default the id). */
export const publish = (node: string, id?: string, text: string = id ?? ''): string =>
  `<pubsub xmlns='${PUBSUB}'><publish node='${node}'><item${id ? ` id='${id}'` : ''}>${entry(text)}</item></publish></pubsub>`;
/** Publish item `id` (entry titled `id`) with publish-options (§7.1.5). */
export const publishWithOptions = (node: string, id: string, fields: FormFields): string =>
  `<pubsub xmlns='${PUBSUB}'><publish node='${node}'><item id='${id}'>${entry(id)}</item></publish><publish-options>${publishOptionsForm(fields)}</publish-options></pubsub>`;
/** Subscribe `jid` to `node` (§6.1.1). */
export const subscribe = (node: string, jid: string): string => `<pubsub xmlns='${PUBSUB}'><subscribe node='${node}' jid='${jid}'/></pubsub>`;
/** Retrieve the items of `node` (§6.5.2). */
export const items = (node: string): string => `<pubsub xmlns='${PUBSUB}'><items node='${node}'/></pubsub>`;
/** The item ids of an items result, in order. */
export const itemIds = (reply: Element): string[] => reply.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id as string) ?? [];
/** The values of a data form's fields, by var (FORM_TYPE included). */
export const fieldsOf = (x: Element | undefined): Map<string, string[]> =>
  new Map((x?.getChildren('field') ?? []).map((f) => [f.attrs.var as string, f.getChildren('value').map((v) => v.getText())]));
