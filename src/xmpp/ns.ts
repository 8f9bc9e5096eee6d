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
  PUBSUB_PUBLISH_OPTIONS: 'http://jabber.org/protocol/pubsub#publish-options',
  PUBSUB_SUBSCRIBE_AUTHORIZATION: 'http://jabber.org/protocol/pubsub#subscribe_authorization',
  COMMANDS: 'http://jabber.org/protocol/commands',
  PUBSUB_SUBSCRIBE_OPTIONS: 'http://jabber.org/protocol/pubsub#subscribe_options',
  PUBSUB_META_DATA: 'http://jabber.org/protocol/pubsub#meta-data',
  DATA_FORMS: 'jabber:x:data',
  PING: 'urn:xmpp:ping',
  VERSION: 'jabber:iq:version',
  SHIM: 'http://jabber.org/protocol/shim',
  RSM: 'http://jabber.org/protocol/rsm',
  DELAY: 'urn:xmpp:delay',
  MAM: 'urn:xmpp:mam:2',
  MAM_EXTENDED: 'urn:xmpp:mam:2#extended',
  FORWARD: 'urn:xmpp:forward:0',
  /** XEP-0359 stanza-id: the archive id of a notification. */
  SID: 'urn:xmpp:sid:0',
  /** Hermod's own pub/sub extensions (subscription option one_copy: src/pubsub/one-copy.ts). */
  HERMOD_PUBSUB: 'urn:hermod:pubsub:0',
} as const;
