-- Live ev-analytics instances, so they can share the partitions between them
-- (functions/ev-analytics/rebalance.ts). A row whose heartbeat is old is a dead instance.
CREATE TABLE IF NOT EXISTS ev_analytics_members (
  instance_id  CHAR(36)    NOT NULL PRIMARY KEY,
  started_at   DATETIME(3) NOT NULL,
  heartbeat_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
