// Minimal types for @xmpp/component-core 0.13 (the package ships none): only what Hermod uses.
declare module '@xmpp/component-core' {
  import { EventEmitter } from 'node:events';
  import type { Socket } from 'node:net';
  import type { Element } from 'ltx';

  export class Component extends EventEmitter {
    constructor(options: { service: string; domain: string });
    status: string;
    socket: Socket | null | undefined;
    start(): Promise<unknown>;
    stop(): Promise<unknown>;
    send(element: Element): Promise<void>;
    write(data: string): Promise<void>;
    authenticate(id: string, password: string): Promise<void>;
  }
}
