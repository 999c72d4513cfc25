-- Delivery to apps: the per-app event log, each grant's last status sent, and webhook state.
ALTER TABLE apps ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
-- highest seq removed by retention: resuming below it needs a resync
ALTER TABLE apps ADD COLUMN purged_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN webhook_cursor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN webhook_failing_since INTEGER;
ALTER TABLE apps ADD COLUMN webhook_next_attempt_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apps ADD COLUMN webhook_last_sent_at INTEGER;
ALTER TABLE apps ADD COLUMN webhook_disabled_at INTEGER;
ALTER TABLE apps ADD COLUMN webhook_disabled_reason TEXT;

-- what this app was last told about this user (online/away/offline), to send only changes
ALTER TABLE grants ADD COLUMN last_status TEXT;

CREATE TABLE events (
    app_id TEXT NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    uid    TEXT NOT NULL,
    status TEXT NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (app_id, seq)
) WITHOUT ROWID;

CREATE INDEX events_at ON events (at);
CREATE INDEX events_uid ON events (app_id, uid);

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    events      INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL
);

CREATE INDEX deliveries_app ON deliveries (app_id, id);
