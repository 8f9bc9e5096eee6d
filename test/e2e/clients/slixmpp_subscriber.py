#!/usr/bin/python3
"""A plain slixmpp client (python3-slixmpp from Debian) used by the interop test: it discovers
the service, subscribes to a node, prints READY, waits for N item notifications (or for the item with the given id), reads the
node's items back and prints one JSON line with what it saw. Exits non-zero on any failure."""
import asyncio
import json
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout


class Subscriber(slixmpp.ClientXMPP):
    def __init__(self, jid, password, service, node, expected):
        super().__init__(jid, password)
        self.service, self.node, self.expected = service, node, expected
        self.notified = []
        self.done = asyncio.Event()
        self.result = {}
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0060')
        self.add_event_handler('session_start', self.start)
        self.add_event_handler('pubsub_publish', self.on_publish)

    def on_publish(self, msg):
        item = msg['pubsub_event']['items']['item']
        payload = item.get_payload()
        title = None
        if payload is not None:
            t = payload.find('{http://www.w3.org/2005/Atom}title')
            title = t.text if t is not None else None
        self.notified.append({'node': msg['pubsub_event']['items']['node'], 'id': item['id'], 'title': title, 'from': str(msg['from'])})
        if (self.expected.isdigit() and len(self.notified) >= int(self.expected)) or item['id'] == self.expected:
            self.done.set()

    async def start(self, _event):
        try:
            self.send_presence()
            info = await self['xep_0030'].get_info(jid=self.service, timeout=10)
            identities = [list(i[:2]) for i in info['disco_info']['identities']]
            features = sorted(info['disco_info']['features'])
            nodes = await self['xep_0030'].get_items(jid=self.service, timeout=10)
            node_ids = [i[1] for i in nodes['disco_items']['items']]
            sub = await self['xep_0060'].subscribe(self.service, self.node, timeout=10)
            state = sub['pubsub']['subscription']['subscription']
            print('READY', flush=True)
            await asyncio.wait_for(self.done.wait(), 20)
            items = await self['xep_0060'].get_items(self.service, self.node, timeout=10)
            stored = [i['id'] for i in items['pubsub']['items']]
            self.result = {'identities': identities, 'features': features, 'nodes': node_ids,
                           'subscription': state, 'notified': self.notified, 'items': stored}
        except (IqError, IqTimeout, asyncio.TimeoutError) as err:
            self.result = {'error': repr(err), 'notified': self.notified}
        self.disconnect()


def main():
    jid, password, host, port, service, node, expected = sys.argv[1:8]
    xmpp = Subscriber(jid, password, service, node, expected)
    xmpp.connect((host, int(port)), disable_starttls=True)
    xmpp.loop.run_until_complete(asyncio.wait_for(xmpp.disconnected, 60))
    print(json.dumps(xmpp.result), flush=True)
    sys.exit(0 if 'error' not in xmpp.result and xmpp.result else 1)


if __name__ == '__main__':
    main()
