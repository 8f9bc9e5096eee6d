// The error answer to an IQ request (RFC 6120 §8.3), as whoever sent the request sees it: the
// component's own requests to partner services (src/component/iq-caller.ts), the test client
// (test/e2e/client.ts) and the benchmark's raw-socket client (bench/lib/raw-xmpp.ts).

import { parse, type Element } from 'ltx';
import { NS } from './ns.ts';

/** Conditions that say the request was not decided on (no answer, or none for now). */
const UNDECIDED = new Set(['remote-server-timeout', 'remote-server-not-found', 'service-unavailable', 'internal-server-error', 'resource-constraint']);

export class IqError extends Error {
  constructor(
    /** The defined condition (e.g. item-not-found); "undefined-condition" if the answer named none. */
    readonly condition: string,
    /** Application-specific condition (e.g. pubsub#errors closed-node), if any. */
    readonly appCondition: string | undefined,
    /** The human-readable <text/>, if any. */
    readonly text: string | undefined,
    /** Who answered (the request's `to`); "" if unknown. */
    readonly from: string,
    /** The error type (cancel, modify, auth, wait, continue); "" if the answer gave none. */
    readonly type = '',
    /** The whole answer, when there was one (not for a timeout or an offline component). */
    readonly stanza?: Element,
  ) {
    super(`${from || 'iq'} answered ${type ? `${type}/` : ''}${condition}${appCondition ? `+${appCondition}` : ''}${text ? `: ${text}` : ''}`);
    this.name = 'IqError';
  }

  /**
   * Whether the request was not decided on (a timeout, the server or service unreachable or
   * failing), or refused for now: asking again later may get another answer. Every error of
   * type `wait` is one (RFC 6120 §8.3.2: "retry after waiting (the error is temporary)"), such
   * as a rate limit's policy-violation.
   */
  get undecided(): boolean {
    return this.type === 'wait' || UNDECIDED.has(this.condition);
  }

  /** The error of an `<iq type='error'/>` answer. */
  static of(stanza: Element): IqError {
    const error = stanza.getChild('error');
    const children = error?.getChildElements() ?? [];
    const condition = children.find((c) => c.getNS() === NS.STANZAS && c.name !== 'text')?.name ?? 'undefined-condition';
    const app = children.find((c) => c.getNS() !== NS.STANZAS)?.name;
    const text = error?.getChild('text', NS.STANZAS)?.getText();
    return new IqError(condition, app, text, (stanza.attrs.from as string | undefined) ?? '', (error?.attrs.type as string | undefined) ?? '', stanza);
  }

  /** The error of an answer given as XML text (parsed only on this, the error path). */
  static fromXml(xml: string): IqError {
    return IqError.of(parse(xml) as Element);
  }
}
