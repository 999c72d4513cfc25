-- Operators disable accounts and apps; tokens say whether they are a browser session or an API
-- token, for the user's list of signed-in sessions.
ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;
ALTER TABLE apps ADD COLUMN disabled_at INTEGER;
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';
CREATE INDEX tokens_account ON tokens (account_id);
