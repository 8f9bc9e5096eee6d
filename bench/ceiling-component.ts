// The "ceiling" peer: a bare XEP-0114 component with no pub/sub logic (no store, no access
// control, no XML trees). It accepts the same requests the load generator sends to a pub/sub
// service — create, subscribe, publish, delete — answers each at once, and for a publish pushes
// one event <message/> per subscriber, shaped exactly like Hermod's (same attributes, same
// <event/> body, the same XEP-0359 <stanza-id/> with an archive-style id that Hermod puts on every
// notification of a persistent node), written to the socket in 64 KiB chunks as fast as the socket takes them
// (waiting for 'drain' only when it pushes back). What it reaches is the physical limit of the
// component path on that server: anything a real service does costs on top of it.
//
// Run as its own process (like Hermod), so it does not share the load generator's event loop:
//   node --import tsx bench/ceiling-component.ts SERVICE JID SECRET
// Prints one JSON line {"ready":true} on stdout when the handshake is done; SIGTERM flushes and
// exits.

import { attr, escapeXml } from './lib/xml-stream.ts';
import { RawComponent } from './lib/raw-xmpp.ts';

const [service = '', jid = '', secret = ''] = process.argv.slice(2);
if (!service || !jid || !secret) {
  process.stderr.write('usage: ceiling-component.ts SERVICE JID SECRET\n');
  process.exit(2);
}

const EVENT = 'http://jabber.org/protocol/pubsub#event';
const SID = 'urn:xmpp:sid:0';
const CHUNK = 64 * 1024;

const comp = await RawComponent.connect({ service, jid, secret });
const socket = comp.rawSocket;
const subscribers = new Map<string, string[]>(); // node -> JIDs
let counter = 0;
let queue: string[] = [];
let head = 0;
let waitingDrain = false;
const prefix = `<message from="${escapeXml(jid)}" type="headline" id="`;

function flush(): void {
  while (!waitingDrain && head < queue.length) {
    let chunk = '';
    while (head < queue.length && chunk.length < CHUNK) chunk += queue[head++];
    if (!socket.write(chunk)) {
      waitingDrain = true;
      socket.once('drain', () => {
        waitingDrain = false;
        flush();
      });
    }
  }
  if (head >= queue.length) {
    queue = [];
    head = 0;
  }
}

function reply(request: string, child = ''): void {
  const id = escapeXml(attr(request, 'id') ?? '');
  const to = escapeXml(attr(request, 'from') ?? '');
  // Replies go straight to the socket (like Hermod's replies, which do not queue behind fan-out).
  socket.write(`<iq type="result" id="${id}" to="${to}" from="${escapeXml(jid)}">${child}</iq>`);
}

comp.onIqRequest = (xml) => {
  const type = attr(xml, 'type');
  const from = attr(xml, 'from') ?? '';
  if (type === 'set') {
    const pub = xml.indexOf('<publish');
    if (pub !== -1) {
      const node = attr(xml.slice(pub), 'node') ?? '';
      const itemAt = xml.indexOf('<item', pub);
      const itemTag = xml.slice(itemAt, xml.indexOf('>', itemAt) + 1);
      const itemId = attr(itemTag, 'id') ?? `c${counter}`;
      const bodyStart = itemAt + itemTag.length;
      const payload = itemTag.endsWith('/>') ? '' : xml.slice(bodyStart, xml.lastIndexOf('</item>'));
      const publisher = from.split('/')[0] ?? '';
      reply(xml, `<pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="${escapeXml(node)}"><item id="${escapeXml(itemId)}"/></publish></pubsub>`);
      // As Hermod's archive ids (src/store/store.ts archiveId): ms stamp and sequence in hex.
      const archiveId = `${Date.now().toString(16).padStart(12, '0')}-${(counter++).toString(16).padStart(10, '0')}`;
      const body =
        `<event xmlns="${EVENT}"><items node="${escapeXml(node)}"><item id="${escapeXml(itemId)}" publisher="${escapeXml(publisher)}">${payload}</item></items></event>` +
        `<stanza-id xmlns="${SID}" id="${archiveId}" by="${escapeXml(jid)}"/></message>`;
      const subs = subscribers.get(node) ?? [];
      for (const to of subs) queue.push(`${prefix}n${(counter++).toString(36)}" to="${escapeXml(to)}">${body}`);
      flush();
      return;
    }
    const sub = xml.indexOf('<subscribe');
    if (sub !== -1) {
      const tag = xml.slice(sub);
      const node = attr(tag, 'node') ?? '';
      const who = attr(tag, 'jid') ?? from;
      let list = subscribers.get(node);
      if (!list) subscribers.set(node, (list = []));
      if (!list.includes(who)) list.push(who);
      reply(
        xml,
        `<pubsub xmlns="http://jabber.org/protocol/pubsub"><subscription node="${escapeXml(node)}" jid="${escapeXml(who)}" subscription="subscribed" subid="s${list.length}"/></pubsub>`,
      );
      return;
    }
    const del = xml.indexOf('<delete');
    if (del !== -1) subscribers.delete(attr(xml.slice(del), 'node') ?? '');
    reply(xml); // create, delete, anything else: accepted, nothing to do
    return;
  }
  if (xml.includes('urn:xmpp:ping')) reply(xml); // readiness checks of the benchmark
  else comp.replyError(xml);
};

process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  const deadline = Date.now() + 5000;
  const wait = (): void => {
    if ((head < queue.length || waitingDrain) && Date.now() < deadline) setTimeout(wait, 20);
    else void comp.close(2000).then(() => process.exit(0));
  };
  wait();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
comp.onClose(() => {
  if (!stopping) {
    process.stderr.write('ceiling component: connection closed by the server\n');
    process.exit(1);
  }
});
