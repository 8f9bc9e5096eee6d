// The typed view of an incoming IQ request that every wire handler receives, and the handler
// signature. A handler returns the payload of the result (or nothing) or throws a
// StanzaError/PubsubError; the router turns that into the reply.

import type { Element } from 'ltx';

export interface IqRequest {
  type: 'get' | 'set';
  /** Normalised full JID of the sender. */
  from: string;
  /** The JID the request was addressed to (the component, possibly with a resource). */
  to: string;
  /** The single child element of the <iq/>. */
  child: Element;
}

export type IqHandler = (request: IqRequest) => Promise<Element | undefined>;

/** Key of the dispatch table: "<type> <namespace> <element>". */
export const routeKey = (type: string, ns: string, name: string): string => `${type} ${ns} ${name}`;
