-- Nodes hold leases; a device notes the node its connection is on, and an app's webhooks are
-- sent by one node at a time, the one that claimed them last.
CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE devices ADD COLUMN node_id TEXT;
CREATE INDEX devices_node ON devices (node_id) WHERE status > 0;

ALTER TABLE apps ADD COLUMN webhook_node TEXT;
ALTER TABLE apps ADD COLUMN webhook_claimed_until INTEGER NOT NULL DEFAULT 0;

-- the node a UAID last said hello on: a connection elsewhere is an older one
ALTER TABLE uaids ADD COLUMN node_id TEXT;
