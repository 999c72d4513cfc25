-- A paused grant's events are no longer deleted from the log (that needed the index below,
-- which every appended event paid for on a random page): they are withheld when the log is
-- read, up to the seq the app's log had reached when the grant was paused, and go with the
-- rest at `event_retention`. A revoked grant's events are withheld as before (no grant row).
ALTER TABLE grants ADD COLUMN hidden_through BIGINT NOT NULL DEFAULT 0;
DROP INDEX events_uid;
