-- SimplePush state: user agents, their channels, and one pending version per channel.
CREATE TABLE uaids (
    uaid         TEXT PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    connected_at INTEGER NOT NULL
) WITHOUT ROWID;

-- `version` is the highest version ever accepted for the channel; it only rises.
-- `pending` is 1 while that version has not been acked by the device.
CREATE TABLE channels (
    uaid       TEXT NOT NULL REFERENCES uaids (uaid) ON DELETE CASCADE,
    chid       TEXT NOT NULL,
    version    INTEGER,
    data       TEXT,
    pending    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (uaid, chid)
) WITHOUT ROWID;

CREATE INDEX channels_pending ON channels (uaid) WHERE pending = 1;
