-- Runs started through the trigger (log replays, log uploads, EV simulations).
-- `published` counts only messages the broker has confirmed. A run whose
-- updated_at is old lost its trigger; another trigger claims and resumes it.
CREATE TABLE IF NOT EXISTS runs (
  id          CHAR(36)      NOT NULL PRIMARY KEY,
  kind        VARCHAR(16)   NOT NULL,
  state       VARCHAR(16)   NOT NULL,
  source      VARCHAR(128)  NULL,
  file        VARCHAR(1024) NULL,
  params      JSON          NULL,
  `lines`     BIGINT        NOT NULL DEFAULT 0,
  published   BIGINT        NOT NULL DEFAULT 0,
  -- Where the run resumes if its trigger dies: messages before it, byte offset in the file.
  checkpoint_item   BIGINT  NOT NULL DEFAULT 0,
  checkpoint_offset BIGINT  NOT NULL DEFAULT 0,
  error       TEXT          NULL,
  created_at  DATETIME(3)   NOT NULL,
  updated_at  DATETIME(3)   NOT NULL,
  finished_at DATETIME(3)   NULL,
  KEY runs_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
