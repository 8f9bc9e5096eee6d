-- Several Hermods with Prosody (README: "Running several Hermods"). Prosody allows one session
-- per component JID, so either:
--
-- 1. Shard by component JID: one Hermod per Component entry, each with its own nodes, all on one
--    store (store.backend "couchdb", the same database). They share the work lease (timers,
--    replication) and take over each other's undelivered notifications when one dies. Clients use
--    pubsub.example.org for some nodes and pubsub2.example.org for others.
Component "pubsub.example.org"
  component_secret = "CHANGE-ME-hermod-component-secret"
Component "pubsub2.example.org"
  component_secret = "CHANGE-ME-other-hermod-secret"
--
-- 2. Active/standby: two Hermods with the SAME component JID and secret (one Component entry as in
--    hermod.cfg.lua) and the same store. Prosody refuses the second while the first is connected;
--    the standby keeps retrying (with backoff) and connects once the active one is gone. Its
--    notifications and the work lease are taken over from the store as above.
--
-- The global component_ports / component_interfaces settings of hermod.cfg.lua apply.
