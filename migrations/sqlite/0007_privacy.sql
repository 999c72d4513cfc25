-- Privacy and authorization.

-- Since when the grant's app has seen its user as online or away (NULL while it sees offline),
-- and when the app was shown a notification as delivered: a delivery is shown to the app only
-- once it could see the user (a user who appears offline must look like one with no device).
ALTER TABLE grants ADD COLUMN visible_since INTEGER;
UPDATE grants SET visible_since = last_update_at WHERE last_status IN ('online', 'away');
ALTER TABLE notifications ADD COLUMN shown_delivered_at INTEGER;
UPDATE notifications SET shown_delivered_at = delivered_at;

-- A UAID belongs to one device of one account. UAIDs held by several devices are taken from all
-- of them: each gets its UAID back (or a fresh one) at its next hello.
UPDATE devices SET uaid = NULL WHERE uaid IN
    (SELECT uaid FROM devices WHERE uaid IS NOT NULL GROUP BY uaid HAVING COUNT(*) > 1);
CREATE UNIQUE INDEX devices_uaid ON devices (uaid);

-- Non-public ranges one app's webhooks may reach besides `webhook_allow` (comma-separated, as
-- that setting; set by the operator only, with `presence app allow-webhook-range`).
ALTER TABLE apps ADD COLUMN webhook_allow TEXT NOT NULL DEFAULT '';
