import { QUEUES } from '../../infra/topology.ts';
import { consumerConfigShape } from '../../shared/config.ts';

export const configShape = { ...consumerConfigShape };
export const READINGS_QUEUE = QUEUES.evStoreReadings;
export const EVENTS_QUEUE = QUEUES.evStoreEvents;
