-- EV charging. Natural keys everywhere: readings by (session, seq), events by
-- their deterministic id, emails by a dedupe key.

-- What the simulator injected, one row per faulty session. Never sent in messages.
CREATE TABLE IF NOT EXISTS ev_sim_truth (
  run_id     CHAR(36)    NOT NULL,
  session_id VARCHAR(64) NOT NULL,
  fault      VARCHAR(32) NOT NULL,
  PRIMARY KEY (run_id, session_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS ev_readings (
  session_id      VARCHAR(64)  NOT NULL,
  seq             INT          NOT NULL,
  run_id          CHAR(36)     NOT NULL,
  ts              DATETIME(3)  NOT NULL,
  charge_point_id VARCHAR(64)  NOT NULL,
  connector_id    SMALLINT     NOT NULL,
  state           VARCHAR(16)  NOT NULL,
  soc_percent     DOUBLE       NOT NULL,
  charge_limit    DOUBLE       NOT NULL,
  power_w         DOUBLE       NOT NULL,
  energy_wh       DOUBLE       NOT NULL,
  current_a       DOUBLE       NOT NULL,
  voltage_v       DOUBLE       NOT NULL,
  temperature_c   DOUBLE       NOT NULL,
  error_code      VARCHAR(32)  NOT NULL,
  stop_reason     VARCHAR(32)  NULL,
  -- Why the reading is physically impossible (NULL when it is plausible).
  problems        VARCHAR(512) NULL,
  -- When the trigger published it (the message's timestamp), for end-to-end lag.
  published_at    DATETIME(3)  NULL,
  PRIMARY KEY (session_id, seq),
  KEY ev_readings_run (run_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS ev_sessions (
  session_id      VARCHAR(64)  NOT NULL PRIMARY KEY,
  run_id          CHAR(36)     NOT NULL,
  charge_point_id VARCHAR(64)  NOT NULL,
  location        VARCHAR(255) NULL,
  vehicle_make    VARCHAR(64)  NOT NULL,
  vehicle_model   VARCHAR(128) NOT NULL,
  vin             CHAR(17)     NOT NULL,
  charger_type    VARCHAR(4)   NOT NULL,
  charger_max_kw  DOUBLE       NOT NULL,
  owner_email     VARCHAR(255) NOT NULL,
  start_soc       DOUBLE       NULL,
  end_soc         DOUBLE       NULL,
  charge_limit    DOUBLE       NOT NULL,
  energy_kwh      DOUBLE       NOT NULL DEFAULT 0,
  first_seq       INT          NOT NULL,
  last_seq        INT          NOT NULL,
  started_at      DATETIME(3)  NOT NULL,
  ended_at        DATETIME(3)  NULL,
  -- charging | completed | stopped | faulted | interrupted
  status          VARCHAR(16)  NOT NULL,
  KEY ev_sessions_run (run_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS ev_events (
  event_id   VARCHAR(128) NOT NULL PRIMARY KEY,
  run_id     CHAR(36)     NOT NULL,
  session_id VARCHAR(64)  NOT NULL,
  type       VARCHAR(32)  NOT NULL,
  severity   VARCHAR(16)  NOT NULL,
  ts         DATETIME(3)  NOT NULL,
  summary    VARCHAR(1024) NOT NULL,
  details    JSON         NOT NULL,
  KEY ev_events_run (run_id, type),
  KEY ev_events_session (session_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- ev-analytics' per-session state, saved before a batch is acknowledged, so a
-- standby that takes a partition over continues where the last owner stopped.
CREATE TABLE IF NOT EXISTS ev_analytics_state (
  session_id VARCHAR(64) NOT NULL PRIMARY KEY,
  run_id     CHAR(36)    NOT NULL,
  partition_no SMALLINT  NOT NULL,
  is_open    TINYINT     NOT NULL,
  state      JSON        NOT NULL,
  updated_at DATETIME(3) NOT NULL,
  KEY ev_analytics_open (partition_no, run_id, is_open)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Each partition's event-time watermark per run.
CREATE TABLE IF NOT EXISTS ev_analytics_clock (
  run_id       CHAR(36)  NOT NULL,
  partition_no SMALLINT  NOT NULL,
  clock        JSON      NOT NULL,
  PRIMARY KEY (run_id, partition_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per (event, recipient role): the dedupe key makes each notification
-- happen once. A row is claimed (status 'sending') in its own commit before the
-- mail goes to SES, so a crash can never lead to a second mail.
CREATE TABLE IF NOT EXISTS email_outbox (
  dedupe_key   VARCHAR(200) NOT NULL PRIMARY KEY,
  event_id     VARCHAR(128) NOT NULL,
  run_id       CHAR(36)     NOT NULL,
  role         VARCHAR(16)  NOT NULL,
  recipient    VARCHAR(255) NOT NULL,
  group_key    VARCHAR(200) NOT NULL,
  event        JSON         NOT NULL,
  -- pending | sending | sent | failed | unknown
  status       VARCHAR(16)  NOT NULL,
  due_at       DATETIME(3)  NOT NULL,
  attempts     INT          NOT NULL DEFAULT 0,
  batch_id     VARCHAR(64)  NULL,
  ses_message_id VARCHAR(255) NULL,
  last_error   VARCHAR(1024) NULL,
  created_at   DATETIME(3)  NOT NULL,
  claimed_at   DATETIME(3)  NULL,
  sent_at      DATETIME(3)  NULL,
  KEY email_outbox_due (status, due_at),
  KEY email_outbox_group (group_key, status),
  KEY email_outbox_batch (batch_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
