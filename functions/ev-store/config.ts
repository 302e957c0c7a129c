import { consumerConfigShape } from '../../shared/config.ts';

export const configShape = { ...consumerConfigShape };
export const READINGS_QUEUE = 'ev.store.readings';
export const EVENTS_QUEUE = 'ev.store.events';
