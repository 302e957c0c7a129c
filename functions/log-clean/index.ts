// log-clean: queue logs.clean -> tables web_requests and log_rejects.
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { logLineContract } from '../../shared/contracts/logs.ts';
import { QUEUE, configShape } from './config.ts';
import { createHandler } from './handler.ts';
import { createCleanLogStore } from './store.ts';

const deps = await boot('log-clean', configShape);
await runQueueFunction(deps, [consume(QUEUE, logLineContract, createHandler({ store: createCleanLogStore(deps.pool) }))]);
