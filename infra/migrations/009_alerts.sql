-- Web-log alerts (log-alerts, issue 8). Rules are evaluated over log_stats_minute in event
-- time (error_rate, scanner) and over the follow runs' progress in wall-clock time (silent);
-- functions/log-alerts/ and docs/design-notes.md say how. Every transition of an incident
-- (fired, resolved) is decided in one transaction that holds the (rule, source) state row
-- locked (SELECT ... FOR UPDATE) and writes the event into log_alerts_outbox in the same
-- commit, so two log-alerts processes never open two incidents for one breach, and an event
-- is never lost between the decision and the broker.
-- source: ASCII and case-sensitive (ascii_bin), like log_stats_minute.source.

-- One row per (rule, source): the incident in progress, if any.
--   incident:       the open incident's id (NULL: none open)
--   since:          its first breaching minute (silent: when the source's lines last moved)
--   last_breach:    its latest breaching minute; it resolves once the ALERT_CLEAR_MINUTES
--                   minutes after it are complete and clean (kept after the resolution)
--   pending_minute: the source's latest minute, not complete yet when last evaluated (event
--                   time has not moved past it and it was updated less than ALERT_SETTLE_S
--                   ago): it is evaluated again once it is, even if its row does not change
--   evaluated_to:   the latest minute of the source seen by the last evaluation
CREATE TABLE IF NOT EXISTS log_alerts_state (
  rule           VARCHAR(16)  NOT NULL,
  source         VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  incident       CHAR(36)     NULL,
  since          DATETIME(3)  NULL,
  last_breach    DATETIME     NULL,
  pending_minute DATETIME     NULL,
  evaluated_to   DATETIME     NULL,
  updated_at     DATETIME(3)  NOT NULL,
  PRIMARY KEY (rule, source),
  -- Each poll revisits the sources with an open incident or a pending minute.
  KEY log_alerts_state_open (incident),
  KEY log_alerts_state_pending (pending_minute)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Every breaching minute, with the incident it was counted in: a minute that breaches is
-- reported once, however often its row moves afterwards (late lines, a second evaluator),
-- while a minute that breaches for the first time after its incident was resolved (late
-- lines that tip an earlier clean minute over) opens a new incident.
CREATE TABLE IF NOT EXISTS log_alerts_breach (
  rule     VARCHAR(16)  NOT NULL,
  source   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  minute   DATETIME     NOT NULL,
  incident CHAR(36)     NOT NULL,
  PRIMARY KEY (rule, source, minute),
  KEY log_alerts_breach_incident (incident)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The silent rule's view of each running follow run: its published count as last seen and
-- when that count last moved (the evaluator's clock, UTC). Rows of runs that ended are deleted.
CREATE TABLE IF NOT EXISTS log_alerts_silence (
  run_id    CHAR(36)     NOT NULL PRIMARY KEY,
  source    VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  published BIGINT       NOT NULL,
  moved_at  DATETIME(3)  NOT NULL,
  KEY log_alerts_silence_source (source)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- How far the evaluators have read log_stats_minute (by updated_at): each poll reads the rows
-- updated since then, less a slack (ALERT_SLACK_S) for transactions that stamped their rows
-- before they committed. Shared by every log-alerts process (name 'minutes').
CREATE TABLE IF NOT EXISTS log_alerts_cursor (
  name       VARCHAR(32) NOT NULL PRIMARY KEY,
  updated_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The transactional outbox of alert events: written in the transaction that decides the
-- transition, published to exchange `logs` (routing key logs.alert.<rule>, message id
-- <incident>:<state>) with publisher confirms, then stamped published_at. A process that dies
-- between the commit and the confirm leaves published_at NULL and the next poll publishes
-- it again: at least once; notify-email mails once per (rule, source, incident, state).
-- Kept once published: the history of every incident.
CREATE TABLE IF NOT EXISTS log_alerts_outbox (
  id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  message_id   VARCHAR(64)  NOT NULL,
  rule         VARCHAR(16)  NOT NULL,
  source       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  incident     CHAR(36)     NOT NULL,
  state        VARCHAR(16)  NOT NULL,
  routing_key  VARCHAR(64)  NOT NULL,
  body         JSON         NOT NULL,
  created_at   DATETIME(3)  NOT NULL,
  published_at DATETIME(3)  NULL,
  UNIQUE KEY log_alerts_outbox_message (message_id),
  KEY log_alerts_outbox_unpublished (published_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- notify-email's outbox now holds web-log alerts beside EV events: `kind` says which (and
-- how to render the row's event); run_id holds an alert's incident id.
ALTER TABLE email_outbox ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'ev';
