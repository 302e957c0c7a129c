-- Fencing of ev-analytics' state (issue 10): one row per partition with an epoch that
-- whoever takes the partition over bumps (a new subscription's first batch). Every save of
-- the partition's session states and clocks runs in one transaction that first locks this row
-- and checks the epoch the saver claimed; a saver whose epoch is no longer current lost the
-- partition and writes nothing, so an older writer can never overwrite the newer owner's state.
CREATE TABLE IF NOT EXISTS ev_analytics_partitions (
  partition_no SMALLINT    NOT NULL PRIMARY KEY,
  epoch        BIGINT      NOT NULL,
  owner        CHAR(36)    NOT NULL,
  claimed_at   DATETIME(3) NOT NULL,
  saved_at     DATETIME(3) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
