-- The aggregates are counted by log-clean, in the transaction that stores the clean
-- rows (docs/design-notes.md): a line is new to the aggregates exactly when its
-- web_requests row is, so the separate record of counted lines goes.
DROP TABLE IF EXISTS log_stats_seen;

-- alerting: requests of the minute whose run left alerts on (a run may mute them with
-- "alerts": false); log-alerts evaluates only minutes that have some.
-- updated_at: when log-clean last added to the row (UTC), so log-alerts reads only
-- the minutes that moved.
ALTER TABLE log_stats_minute
  ADD COLUMN alerting BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN updated_at DATETIME(3) NOT NULL DEFAULT '1970-01-01 00:00:00',
  ADD KEY log_stats_minute_updated (updated_at);
