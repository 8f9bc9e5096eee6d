// Minimal types for @xmpp/client 0.13 (the package ships none): only what Hermod's tests, demo
// and benchmarks use. Extend as needed.
declare module '@xmpp/client' {
  import { EventEmitter } from 'node:events';
  import type { Element } from 'ltx';

  export type { Element };

  export interface JID {
    local: string;
    domain: string;
    resource: string;
    bare(): JID;
    toString(): string;
  }

  export interface ClientOptions {
    /** e.g. 'xmpp://127.0.0.2:5222' (plain TCP, STARTTLS if offered) or 'xmpps://...' */
    service?: string;
    domain?: string;
    resource?: string;
    username?: string;
    password?: string;
    lang?: string;
    timeout?: number;
  }

  export interface IqCaller {
    request(stanza: Element, timeout?: number): Promise<Element>;
    get(child: Element, to?: string, timeout?: number): Promise<Element>;
    set(child: Element, to?: string, timeout?: number): Promise<Element>;
  }

  export interface Client extends EventEmitter {
    status: string;
    jid: JID | null;
    timeout: number;
    iqCaller: IqCaller;
    reconnect: EventEmitter & { delay: number; stop(): void };
    start(): Promise<JID>;
    stop(): Promise<void>;
    send(element: Element): Promise<void>;
    sendMany(elements: Element[]): Promise<void>;
    write(data: string): Promise<void>;

    on(event: 'online', listener: (jid: JID) => void): this;
    on(event: 'offline', listener: () => void): this;
    on(event: 'stanza', listener: (stanza: Element) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
    on(event: 'status', listener: (status: string, value?: unknown) => void): this;
    // any: xmpp.js emits arbitrary events with arbitrary arguments; typed overloads above cover ours.
    on(event: string, listener: (...args: any[]) => void): this;
    once(event: 'online', listener: (jid: JID) => void): this;
    once(event: 'stanza', listener: (stanza: Element) => void): this;
    once(event: 'error', listener: (err: Error) => void): this;
    // any: as for on() above.
    once(event: string, listener: (...args: any[]) => void): this;
  }

  export function client(options?: ClientOptions): Client;

  type Child = Element | string | number | null | undefined | false | Child[];
  export function xml(name: string, attrs?: Record<string, string | number | undefined> | null, ...children: Child[]): Element;
  export function jid(address: string): JID;
}
