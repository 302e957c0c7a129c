import { consumerConfigShape } from '../../shared/config.ts';

export const configShape = { ...consumerConfigShape };
export const QUEUE = 'logs.clean';
