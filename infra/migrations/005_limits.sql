-- Limits on every input (issue 7).
-- A line longer than the trigger's MAX_LINE_BYTES is kept in the lake cut to
-- that size; truncated_from holds its real length in bytes (NULL: the row holds
-- the whole line). log-clean records such a line in log_rejects with the reason.
ALTER TABLE raw_logs ADD COLUMN truncated_from BIGINT NULL;

-- Fields of a parsed request that were longer than their column were cut to fit
-- (the request is kept); this names them, comma-separated (NULL: nothing cut).
ALTER TABLE web_requests ADD COLUMN truncated VARCHAR(255) NULL;
