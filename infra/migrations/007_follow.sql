-- Follow live logs (issue 8).
-- A follow run's checkpoint: per followed file its identity (device, inode, a
-- fingerprint of its first bytes) and the offset of its first line the broker
-- has not confirmed, the run's next line number, and the order of the lines in
-- flight by file, so that a trigger resuming the run numbers every line as the
-- dead one did (functions/trigger/follow.ts). NULL for every other run.
ALTER TABLE runs ADD COLUMN follow_checkpoint JSON NULL;

-- The file under the trigger's LOG_DIR a line was read from (NULL: an upload).
-- A followed file keeps the name it had when its run first saw it, also once rotated.
ALTER TABLE raw_logs ADD COLUMN file VARCHAR(1024) NULL;
