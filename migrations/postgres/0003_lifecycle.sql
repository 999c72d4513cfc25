-- As the SQLite migration 0007: disabled accounts and apps, and the kind of each token.
ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;
ALTER TABLE apps ADD COLUMN disabled_at BIGINT;
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
CREATE INDEX tokens_account ON tokens (account_id);
