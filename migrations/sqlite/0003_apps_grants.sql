-- Apps registered by developers, users' grants to them (the seed's Presence-Authentications),
-- and single-use authorization codes from the consent page.
CREATE TABLE apps (
    app_id         TEXT PRIMARY KEY,
    owner_id       INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    -- JSON array of exact redirect URIs
    redirect_uris  TEXT NOT NULL,
    webhook_url    TEXT,
    -- SHA-256 of the app secret
    secret_hash    TEXT NOT NULL UNIQUE,
    -- the webhook signing secret, sealed with the server key (it must be read back to sign)
    webhook_secret TEXT NOT NULL,
    created_at     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX apps_owner ON apps (owner_id);

CREATE TABLE grants (
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    app_id         TEXT NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    -- random per (account, app): two apps cannot correlate a user
    uid            TEXT NOT NULL UNIQUE,
    enabled        INTEGER NOT NULL DEFAULT 1,
    -- away is shown to this app as online
    coarse         INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    last_update_at INTEGER,
    PRIMARY KEY (account_id, app_id)
) WITHOUT ROWID;

CREATE INDEX grants_app ON grants (app_id);

CREATE TABLE auth_codes (
    hash           TEXT PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT,
    expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
