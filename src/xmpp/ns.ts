// XML namespaces Hermod speaks.
export const NS = {
  STANZAS: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  DISCO_INFO: 'http://jabber.org/protocol/disco#info',
  DISCO_ITEMS: 'http://jabber.org/protocol/disco#items',
  PUBSUB: 'http://jabber.org/protocol/pubsub',
  PUBSUB_OWNER: 'http://jabber.org/protocol/pubsub#owner',
  PUBSUB_EVENT: 'http://jabber.org/protocol/pubsub#event',
  PUBSUB_ERRORS: 'http://jabber.org/protocol/pubsub#errors',
  PUBSUB_NODE_CONFIG: 'http://jabber.org/protocol/pubsub#node_config',
  PUBSUB_META_DATA: 'http://jabber.org/protocol/pubsub#meta-data',
  DATA_FORMS: 'jabber:x:data',
  PING: 'urn:xmpp:ping',
  VERSION: 'jabber:iq:version',
  SHIM: 'http://jabber.org/protocol/shim',
} as const;
