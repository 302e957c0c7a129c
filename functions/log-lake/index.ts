// log-lake: queue logs.lake -> table raw_logs.
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { logLinesContract } from '../../shared/contracts/logs.ts';
import { QUEUE, configShape } from './config.ts';
import { createHandler } from './handler.ts';
import { createRawLogStore } from './store.ts';

const deps = await boot('log-lake', configShape);
await runQueueFunction(deps, [consume(QUEUE, logLinesContract, createHandler({ store: createRawLogStore(deps.pool) }))]);
