-- Optional: XEP-0356 (Privileged Entity) for Hermod, so that it can offer the `presence` and
-- `roster` pub/sub access models and learn its subscribers' presence. Needs mod_privilege
-- from prosody-modules (Debian: apt-get install prosody-modules).
--
-- Install: add this AFTER hermod.cfg.lua (same JID), replacing "example.org" with your
-- VirtualHost and "pubsub.example.org" with Hermod's component JID. If your VirtualHost
-- already has its own modules_enabled, add "privilege" to that list instead of the line below.
--
-- roster = "get": Hermod reads (never writes) the rosters of this host's users, to decide
-- whether a node owner's contact may subscribe (presence: subscription "from" or "both";
-- roster: in one of pubsub#roster_groups_allowed).
-- presence = "roster": the server forwards the presence of its users and of their contacts,
-- for pubsub#presence_based_delivery and send_last_published_item = on_sub_and_presence
-- ("managed_entity" gives the host's users only).
-- Prosody sends Hermod a <privilege xmlns='urn:xmpp:privilege:2'/> message when it connects;
-- Hermod logs "XEP-0356 privileges granted" with what it got.

VirtualHost "example.org"
	modules_enabled = { "privilege" }
	privileged_entities = {
		["pubsub.example.org"] = { roster = "get"; presence = "roster" };
	}

Component "pubsub.example.org"
	modules_enabled = { "privilege" }
