-- Accounts, their bearer tokens, devices (the seed's Client-Mappings) and presence.
-- Statuses are ranks so that "best of the devices" is MAX(): 0 offline (U), 1 away (A), 2 online (O).
CREATE TABLE accounts (
    id                   INTEGER PRIMARY KEY,
    email                TEXT UNIQUE,
    password_hash        TEXT,
    issuer               TEXT,
    subject              TEXT,
    -- best status over the account's devices
    status               INTEGER NOT NULL DEFAULT 0,
    -- what apps were last told: status, or offline while appear_offline is set
    visible              INTEGER NOT NULL DEFAULT 0,
    idle_away_minutes    INTEGER NOT NULL DEFAULT 5,
    idle_offline_minutes INTEGER NOT NULL DEFAULT 30,
    appear_offline       INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    UNIQUE (issuer, subject)
);

-- Bearer tokens, by the SHA-256 of the token.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A device knows its PrID; we keep only its SHA-256.
CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    prid_hash  TEXT NOT NULL UNIQUE,
    uaid       TEXT,
    status     INTEGER NOT NULL DEFAULT 0,
    status_at  INTEGER,
    last_seen  INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX devices_account ON devices (account_id);
CREATE INDEX devices_live ON devices (status_at) WHERE status > 0;
