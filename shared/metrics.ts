// Prometheus metrics. Each function process has one registry, served at /metrics.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics(fn: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ fn });
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    messages: new Counter({
      name: 'sluice_messages_total',
      help: 'Messages consumed, by queue and outcome (ack, retry, dead_letter)',
      labelNames: ['queue', 'outcome'] as const,
      registers: [registry],
    }),
    batchSeconds: new Histogram({
      name: 'sluice_batch_seconds',
      help: 'Handler time per batch',
      labelNames: ['queue'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    published: new Counter({
      name: 'sluice_published_total',
      help: 'Messages confirmed by the broker, by exchange',
      labelNames: ['exchange'] as const,
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
