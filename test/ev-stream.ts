// A simulated EV stream as the batches ev-analytics' handler receives: each item with the message
// id and routing key the trigger publishes it under (unit and integration tests alike).
import type { BatchItem } from '../shared/amqp/consumer.ts';
import type { AnalyticsMessage } from '../functions/ev-analytics/contract.ts';
import { simItemMessage, type SimItem } from '../functions/trigger/ev-simulator.ts';

export function asBatchItems(items: Iterable<SimItem>): BatchItem<AnalyticsMessage>[] {
  return [...items].map((body) => {
    const { options, routingKey } = simItemMessage(body);
    return { body, messageId: options.messageId, routingKey, redelivered: false, publishedAt: undefined, attempt: 1 };
  });
}
