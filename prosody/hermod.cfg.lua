-- Hermod: XMPP publish/subscribe service (XEP-0060) attached to Prosody as an
-- external component (XEP-0114).
--
-- Install:
--  1. Copy this file to /etc/prosody/conf.d/ (Debian includes that directory
--     from prosody.cfg.lua) or add at the END of prosody.cfg.lua, after your
--     VirtualHost sections:   Include "/etc/prosody/hermod.cfg.lua"
--  2. Replace "pubsub.example.org" with a subdomain of your VirtualHost and
--     the secret with a long random string (e.g. `openssl rand -hex 24`);
--     give Hermod the same JID and secret.
--  3. In the GLOBAL section (before any VirtualHost) let Prosody accept
--     component connections. XEP-0114 is plain TCP with a shared secret: keep
--     it on loopback or a private network, never the public internet.
--        component_ports = { 5347 }
--        component_interfaces = { "127.0.0.1" }
--  4. Remote subscribers reach the component over s2s: in production keep
--     TLS on (s2s_require_encryption = true, valid certificates for
--     pubsub.example.org or a cert covering it) and make the name resolve
--     (DNS A/SRV record pointing at this Prosody).
--  5. `prosodyctl reload` (or restart), then start Hermod.
--  6. Optional, for latency: in the GLOBAL section
--        network_settings = { nagle = false }
--     Prosody leaves Nagle's algorithm on by default, so its small writes to
--     Hermod (requests, and Hermod's own delivery confirmations routed back)
--     wait for delayed ACKs: measured publish round trip p50 28 ms -> 2 ms and
--     notification p99 54 -> 12 ms at 50 publishes/s (docs/PERFORMANCE.md).
--     It costs Prosody more syscalls when it is saturated.
--  7. Recommended where Hermod replicates (many documents through Prosody), on
--     Lua 5.4 (Debian 12), in the GLOBAL section:
--        gc = { mode = "generational" }
--     Prosody's default collector (incremental, pause 105 %) starts a new cycle
--     almost as soon as one ends; with every document crossing Prosody as a
--     notification per partner it cost about half of Prosody's CPU. At
--     four partners: Prosody's CPU per document -43 to -57 %, replication +20 %
--     or more documents/s, Prosody's memory +3 MiB (docs/PERFORMANCE.md; see
--     https://prosody.im/doc/advanced_gc). The test suite runs Prosody so.
--
-- Hermod publishes whole documents as items: raise the stanza size limits if
-- your items are large (Prosody defaults: 256 KiB c2s, 512 KiB s2s). Set
-- c2s_stanza_size_limit / s2s_stanza_size_limit globally for subscribers'
-- connections as well, and do not rate-limit s2s too tightly with mod_limits.

Component "pubsub.example.org"
	component_secret = "CHANGE-ME-hermod-component-secret"
	-- Largest stanza (bytes) accepted from Hermod on the component connection.
	component_stanza_size_limit = 8 * 1024 * 1024
	name = "Hermod publish/subscribe"

-- Ajatus replication sends attachments above its inline limit through XEP-0363. Prosody's
-- built-in http_file_share lets every host it serves upload, components included:
--   Component "upload.example.org" "http_file_share"
--       http_file_share_size_limit = 64*1024*1024
-- (with http_ports / http_external_url set so that partners can download the files).
