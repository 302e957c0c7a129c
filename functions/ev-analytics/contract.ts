// A partition queue carries two kinds of messages: readings and the run's clock.
import type { Contract } from '../../shared/amqp/consumer.ts';
import { EvClockSchema, EvReadingSchema, type EvClock, type EvReading } from '../../shared/contracts/ev.ts';
import { jsonContract } from '../../shared/contracts/json.ts';
import { PoisonMessageError } from '../../shared/errors.ts';

export type AnalyticsMessage = { kind: 'reading'; reading: EvReading } | { kind: 'clock'; clock: EvClock };

const readings = jsonContract('ev.reading', EvReadingSchema);
const clocks = jsonContract('ev.clock', EvClockSchema);

export const analyticsContract: Contract<AnalyticsMessage> = {
  name: 'ev-analytics',
  decode(msg) {
    const type = msg.properties.type ?? (msg.fields.routingKey.startsWith('ev.reading.') ? 'ev.reading' : msg.fields.routingKey);
    if (type === 'ev.reading') return { kind: 'reading', reading: readings.decode(msg) };
    if (type === 'ev.clock') return { kind: 'clock', clock: clocks.decode(msg) };
    throw new PoisonMessageError(`unknown message type '${String(type)}' (expected ev.reading or ev.clock)`);
  },
};
