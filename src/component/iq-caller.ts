// Requests the component sends (disco, subscribe, items to partner services): each gets an id,
// a bounded wait, and resolves with the result <iq/> or rejects with IqError (src/xmpp/iq-error.ts).

import { Element } from 'ltx';
import { IqError } from '../xmpp/iq-error.ts';

export class IqCaller {
  private counter = 0;
  private readonly pending = new Map<string, { to: string; resolve: (el: Element) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    private readonly from: string,
    /** Sends a stanza; returns false when the component is offline. */
    private readonly send: (stanza: Element) => boolean,
    /**
     * This cluster member's tag (src/cluster/relay.ts): ids become `q<tag>.<n>`, so that a reply
     * delivered to another process is relayed back through the store. '' (default): `q<n>`.
     */
    private readonly tag = '',
  ) {}

  /** Requests awaiting their reply. */
  get pendingCount(): number {
    return this.pending.size;
  }

  request(to: string, type: 'get' | 'set', child: Element, timeoutMs = 15_000): Promise<Element> {
    const id = `q${this.tag ? `${this.tag}.` : ''}${(++this.counter).toString(36)}`;
    const iq = new Element('iq', { type, to, from: this.from, id }).cnode(child).up();
    return new Promise<Element>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new IqError('remote-server-timeout', undefined, `no answer within ${timeoutMs} ms`, to, 'wait'));
      }, timeoutMs);
      this.pending.set(id, { to, resolve, reject, timer });
      if (!this.send(iq)) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new IqError('service-unavailable', undefined, 'component offline', to, 'cancel'));
      }
    });
  }

  /** Feed iq results/errors here; returns true if one matched a request. */
  handleResponse(stanza: Element): boolean {
    const id = stanza.attrs.id as string | undefined;
    const waiter = id === undefined ? undefined : this.pending.get(id);
    if (!waiter) return false;
    this.pending.delete(id as string);
    clearTimeout(waiter.timer);
    if (stanza.attrs.type === 'result') {
      waiter.resolve(stanza);
    } else {
      waiter.reject(IqError.of(stanza));
    }
    return true;
  }

  /**
   * Rejects what is still waiting (shutdown) with IqError service-unavailable: every request, or
   * those whose addressee `which` picks (e.g. partners' services, not the component's own server).
   */
  cancelAll(which: (to: string) => boolean = () => true): void {
    for (const [id, w] of this.pending) {
      if (!which(w.to)) continue;
      clearTimeout(w.timer);
      w.reject(new IqError('service-unavailable', undefined, 'shutting down', '', 'cancel'));
      this.pending.delete(id);
    }
  }
}
