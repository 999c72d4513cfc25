-- Expiry: the periodic sweep finds what it removes by these. `uaids.connected_at` is the last
-- hello or close of the UAID, and `uaids.node_id` is cleared when its connection closes.
CREATE INDEX uaids_connected ON uaids (connected_at);
-- Devices are found by their UAID through the unique index devices_uaid (0007_privacy).
CREATE INDEX tokens_expires ON tokens (expires_at);
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);
CREATE INDEX notifications_expires ON notifications (expires_at);
