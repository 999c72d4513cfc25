-- How an app's webhook bodies are written ('pairs', the seed's, or 'v1', the Standard Webhooks
-- envelope), and the webhook secret a rotation replaced: sealed like the current one, it still
-- signs alongside it until `webhook_secret_previous_until` (Unix seconds).
ALTER TABLE apps ADD COLUMN webhook_format TEXT NOT NULL DEFAULT 'pairs';
ALTER TABLE apps ADD COLUMN webhook_secret_previous TEXT;
ALTER TABLE apps ADD COLUMN webhook_secret_previous_until BIGINT;
