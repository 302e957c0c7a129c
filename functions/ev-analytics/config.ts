import { z } from 'zod';
import { EV_ANALYTICS_QUEUES } from '../../infra/topology.ts';
import { consumerConfigShape } from '../../shared/config.ts';
import { DEFAULT_DETECTOR_CONFIG as D } from './detector.ts';

/** One queue per partition, in partition order (the index of a queue is its partition). */
export const PARTITION_QUEUES = EV_ANALYTICS_QUEUES;

const threshold = (fallback: number) => z.coerce.number().min(0).default(fallback);

export const configShape = {
  ...consumerConfigShape,
  // Partitions keep their order through one batch at a time; smaller batches keep latency low.
  BATCH_SIZE: consumerConfigShape.BATCH_SIZE.default(200),
  BATCH_WAIT_MS: consumerConfigShape.BATCH_WAIT_MS.default(20),
  /** Detection thresholds (event time). Defaults never fire on a healthy session. */
  EV_OFFLINE_AFTER_INTERVALS: z.coerce.number().positive().default(D.offlineAfterIntervals),
  EV_STALL_POWER_W: threshold(D.stallPowerW),
  EV_STALL_AFTER_S: threshold(D.stallAfterS),
  EV_SOC_DROP_POINTS: threshold(D.socDropPoints),
  EV_OVER_LIMIT_POINTS: threshold(D.overLimitPoints),
  EV_COMPLETED_TOLERANCE_POINTS: threshold(D.completedTolerancePoints),
  /** Readings of a session that may wait above a missing one (a retry) before it is taken as lost. */
  EV_REORDER_WINDOW: z.coerce.number().int().min(1).max(10_000).default(D.reorderWindow),
  /** How often instances heartbeat and share out the partitions. */
  REBALANCE_EVERY_MS: z.coerce.number().int().min(100).max(60_000).default(2_000),
};
