// log-clean: queue logs.clean -> tables web_requests and log_rejects, and the aggregates log_stats_* (counted as the rows go in).
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { logLinesContract } from '../../shared/contracts/logs.ts';
import { QUEUE, configShape } from './config.ts';
import { createHandler } from './handler.ts';
import { createCleanLogStore } from './store.ts';

// foundRows false: the store learns from an INSERT's affected rows which requests are new (store.ts).
const deps = await boot('log-clean', configShape, { pool: { foundRows: false } });
const aggregates = deps.config.AGGREGATES;
const store = createCleanLogStore(deps.pool, { aggregates });
await runQueueFunction(deps, [consume(QUEUE, logLinesContract, createHandler({ store, aggregates }))]);
