-- App secret rotation with an overlap: the secret before the current one (its SHA-256) keeps
-- authenticating the app until `previous_secret_expires_at`; the expiry sweep then clears it.
ALTER TABLE apps ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE apps ADD COLUMN previous_secret_expires_at INTEGER;
CREATE UNIQUE INDEX apps_previous_secret ON apps (previous_secret_hash);
CREATE INDEX apps_previous_secret_expires ON apps (previous_secret_expires_at);
