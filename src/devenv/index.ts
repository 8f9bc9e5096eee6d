// The development environment (tests, the demo, benchmarks) in one import: real Prosody and
// ejabberd (env.ts, prosody.ts, ejabberd.ts, xmpp-server.ts), pouchdb-server (couchdb.ts),
// private dbus-daemons (dbus.ts), Hermod as a process (hermod.ts) and the process control they
// share (process.ts). The preflight (preflight.js) and busy-port diagnosis (ports.ts) are
// imported from their own modules by the scripts that run before anything is installed.

export { startCouch, type CouchServer } from './couchdb.ts';
export { startDbus, type DbusDaemon } from './dbus.ts';
export { renderEjabberdPrivilegeSnippet, renderEjabberdSnippet } from './ejabberd.ts';
export { PortsBusyError, startXmppEnv, withXmppEnv, type EnvOptions, type XmppEnv } from './env.ts';
export { clusterStatusOf, hermodCli, startHermodProcess, writeHermodConfig, type HermodProcess, type HermodProcessOptions } from './hermod.ts';
export { eventually, freePort, killAllNow, sleep, spawnChild, type Child } from './process.ts';
export { renderProsodyPrivilegeSnippet, renderProsodySnippet } from './prosody.ts';
export { ALPHA_DOMAIN, BETA_DOMAIN, PORTS, STANZA_LIMIT, type ServerInfo } from './xmpp-server.ts';
