-- Expiry: the periodic sweep finds what it removes by these. `uaids.connected_at` is the last
-- hello or close of the UAID, and `uaids.node_id` is cleared when its connection closes.
CREATE INDEX uaids_connected ON uaids (connected_at);
CREATE INDEX devices_uaid ON devices (uaid) WHERE uaid IS NOT NULL;
CREATE INDEX tokens_expires ON tokens (expires_at);
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);
CREATE INDEX notifications_expires ON notifications (expires_at);
