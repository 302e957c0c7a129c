-- Streaming web-log aggregates (log-stats). Exact under at-least-once delivery:
-- a line is counted only by the transaction that first inserts its key into
-- log_stats_seen, so a redelivered batch adds nothing.
-- batch_id: the id of the transaction (one per batch) that inserted the row. Rows go in
-- with INSERT IGNORE, several per statement; reading back those that carry the batch's
-- id is how the batch learns which of them it inserted (new lines, new visitors, new
-- (value, visitor) pairs), under MySQL and MariaDB alike.
-- source: ASCII and case-sensitive (ascii_bin) like the sources themselves (letters, digits,
-- _ and -; shared/contracts/logs.ts): under a case-insensitive collation `Shop` and `shop`
-- would add up into one source.

-- Lines already counted (run, line): the dedupe of every aggregate below.
CREATE TABLE IF NOT EXISTS log_stats_seen (
  run_id   CHAR(36)   NOT NULL,
  line_no  BIGINT     NOT NULL,
  batch_id BINARY(16) NOT NULL,
  PRIMARY KEY (run_id, line_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Per source and minute of event time (UTC).
CREATE TABLE IF NOT EXISTS log_stats_minute (
  source   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  minute   DATETIME     NOT NULL,
  requests BIGINT       NOT NULL DEFAULT 0,
  bytes    BIGINT       NOT NULL DEFAULT 0,
  -- Visitors whose first request that day (see log_stats_visitor) is in this minute: a day's minutes add up to its unique visitors.
  visitors BIGINT       NOT NULL DEFAULT 0,
  s1xx BIGINT NOT NULL DEFAULT 0, s2xx BIGINT NOT NULL DEFAULT 0, s3xx BIGINT NOT NULL DEFAULT 0,
  s4xx BIGINT NOT NULL DEFAULT 0, s5xx BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (source, minute)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A visitor as GoAccess counts one: same client IP, same user agent, same day in the log's own
-- time zone; requests answered 4xx do not make a visitor. `visitor` = MD5(ip NUL user agent).
-- first_minute: the earliest minute (event time) the visitor made a request in, whatever order
-- the lines arrive in (redeliveries, several consumers): a batch that brings an earlier one moves
-- the visitor there (batch_id: that batch; moved_from: the minute it took the visitor from), so
-- log_stats_minute.visitors depends on the lines only, not on how they were delivered.
CREATE TABLE IF NOT EXISTS log_stats_visitor (
  source       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  day          DATE         NOT NULL,
  visitor      BINARY(16)   NOT NULL,
  first_minute DATETIME     NOT NULL,
  batch_id     BINARY(16)   NOT NULL,
  moved_from   DATETIME     NULL,
  PRIMARY KEY (source, day, visitor)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Per source, day (the log's own time zone) and dimension (path, not_found, referrer,
-- client_ip, user_agent): every value with its counts; top N is a query.
CREATE TABLE IF NOT EXISTS log_stats_top (
  source     VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  day        DATE         NOT NULL,
  dimension  VARCHAR(16)  NOT NULL,
  value_hash BINARY(16)   NOT NULL,
  value      TEXT         NOT NULL,
  requests   BIGINT       NOT NULL DEFAULT 0,
  bytes      BIGINT       NOT NULL DEFAULT 0,
  visitors   BIGINT       NOT NULL DEFAULT 0,
  PRIMARY KEY (source, day, dimension, value_hash),
  -- A day's top N of one source reads the index backwards, whatever the number of values.
  KEY log_stats_top_rank (source, day, dimension, requests)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Which visitors a path or referrer has had that day (for its visitors count). Not kept for
-- client_ip and user_agent: the visitor is their hash, so a value of theirs has a new visitor
-- exactly when the visitor is new that day; nor for not_found, as a 404 makes no visitor.
CREATE TABLE IF NOT EXISTS log_stats_top_visitor (
  source     VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  day        DATE         NOT NULL,
  dimension  VARCHAR(16)  NOT NULL,
  value_hash BINARY(16)   NOT NULL,
  visitor    BINARY(16)   NOT NULL,
  batch_id   BINARY(16)   NOT NULL,
  PRIMARY KEY (source, day, dimension, value_hash, visitor)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
