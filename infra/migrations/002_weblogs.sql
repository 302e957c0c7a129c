-- Web-server logs. Every table is keyed by (run_id, line_no), the natural key of
-- a log line, so a redelivered message rewrites nothing.

-- The data lake: every line exactly as it was read (bytes, not text).
CREATE TABLE IF NOT EXISTS raw_logs (
  run_id      CHAR(36)     NOT NULL,
  line_no     BIGINT       NOT NULL,
  source      VARCHAR(128) NOT NULL,
  byte_offset BIGINT       NOT NULL,
  line        MEDIUMBLOB   NOT NULL,
  received_at DATETIME(3)  NOT NULL,
  PRIMARY KEY (run_id, line_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Parsed requests. `-` in the log is NULL here.
CREATE TABLE IF NOT EXISTS web_requests (
  run_id        CHAR(36)     NOT NULL,
  line_no       BIGINT       NOT NULL,
  source        VARCHAR(128) NOT NULL,
  ts            DATETIME(3)  NOT NULL,
  tz_offset_min SMALLINT     NOT NULL,
  client_ip     VARCHAR(255) NULL,
  forwarded_for VARCHAR(1024) NULL,
  vhost         VARCHAR(255) NULL,
  remote_user   VARCHAR(255) NULL,
  request       TEXT         NOT NULL,
  method        VARCHAR(32)  NULL,
  path          TEXT         NULL,
  query         TEXT         NULL,
  protocol      VARCHAR(32)  NULL,
  status        SMALLINT     NOT NULL,
  bytes         BIGINT       NULL,
  referrer      TEXT         NULL,
  user_agent    TEXT         NULL,
  PRIMARY KEY (run_id, line_no),
  KEY web_requests_ts (ts),
  KEY web_requests_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Lines the parser could not read, kept whole with the reason.
CREATE TABLE IF NOT EXISTS log_rejects (
  run_id      CHAR(36)     NOT NULL,
  line_no     BIGINT       NOT NULL,
  source      VARCHAR(128) NOT NULL,
  line        MEDIUMBLOB   NOT NULL,
  reason      VARCHAR(512) NOT NULL,
  received_at DATETIME(3)  NOT NULL,
  PRIMARY KEY (run_id, line_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
