// A partition queue carries three kinds of messages: readings, the quiet notices of their
// sessions, and the run's clock.
import type { Contract } from '../../shared/amqp/consumer.ts';
import { READING_ROUTING_PREFIX, evClockContract, evQuietContract, evReadingContract, type EvStreamItem } from '../../shared/contracts/ev.ts';
import { MESSAGE_TYPES } from '../../shared/contracts/names.ts';
import { PoisonMessageError } from '../../shared/errors.ts';

export type AnalyticsMessage = EvStreamItem;

export const analyticsContract: Contract<AnalyticsMessage> = {
  name: 'ev-analytics',
  decode(msg) {
    const type = msg.properties.type ?? (msg.fields.routingKey.startsWith(`${READING_ROUTING_PREFIX}.`) ? MESSAGE_TYPES.evReading : msg.fields.routingKey);
    if (type === MESSAGE_TYPES.evReading) return { kind: 'reading', reading: evReadingContract.decode(msg) };
    if (type === MESSAGE_TYPES.evClock) return { kind: 'clock', clock: evClockContract.decode(msg) };
    if (type === MESSAGE_TYPES.evQuiet) return { kind: 'quiet', quiet: evQuietContract.decode(msg) };
    throw new PoisonMessageError(`unknown message type '${String(type)}' (expected ${MESSAGE_TYPES.evReading}, ${MESSAGE_TYPES.evQuiet} or ${MESSAGE_TYPES.evClock})`);
  },
};
