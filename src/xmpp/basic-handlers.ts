// Small XMPP courtesies every service answers: XEP-0199 ping and XEP-0092 software version.

import { Element } from 'ltx';
import { NS } from './ns.ts';
import { routeKey, type IqHandler } from './request.ts';

export function basicRoutes(version: string): Map<string, IqHandler> {
  return new Map<string, IqHandler>([
    [routeKey('get', NS.PING, 'ping'), async () => undefined],
    [
      routeKey('get', NS.VERSION, 'query'),
      async () => {
        const q = new Element('query', { xmlns: NS.VERSION });
        q.c('name').t('Hermod');
        q.c('version').t(version);
        return q;
      },
    ],
  ]);
}
