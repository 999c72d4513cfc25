-- Live notifications from apps to users, and their delivery to each of the user's devices.
CREATE TABLE notifications (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    url          TEXT,
    sent_at      INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    -- first delivery to any device, and to how many devices it went
    delivered_at INTEGER,
    delivered_to INTEGER NOT NULL DEFAULT 0,
    -- the grant was paused or revoked before delivery
    cancelled_at INTEGER
) WITHOUT ROWID;

CREATE INDEX notifications_app_account ON notifications (app_id, account_id, sent_at);

-- One row per device the notification is for, until the device acks it.
CREATE TABLE device_notifications (
    device_id       TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    queued_at       INTEGER NOT NULL,
    delivered_at    INTEGER,
    acked           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, notification_id)
) WITHOUT ROWID;
