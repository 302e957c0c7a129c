// log-stats: queue logs.stats -> tables log_stats_* (exact streaming aggregates of access logs).
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { logLineContract } from '../../shared/contracts/logs.ts';
import { QUEUE, configShape } from './config.ts';
import { createHandler } from './handler.ts';
import { createStatsStore } from './store.ts';

const deps = await boot('log-stats', configShape);
await runQueueFunction(deps, [consume(QUEUE, logLineContract, createHandler({ store: createStatsStore(deps.pool) }))]);
