// An in-memory DeadLetters port for the trigger's unit tests: queues of raw messages, described
// by the real describeDeadLetter; a replay moves messages to `moved` (what reached the source queue).
import type { GetMessage } from 'amqplib';
import { describeDeadLetter, replayHeaders, type DeadLetters } from '../../../functions/trigger/dlq.ts';
import { deadLetterQueue, topology } from '../../../infra/topology.ts';

export type RawMessage = Pick<GetMessage, 'content' | 'fields' | 'properties'>;

export function deadLetter(queue: string, body: string | Buffer, headers: Record<string, unknown> = {}, messageId = 'm-1'): RawMessage {
  return {
    content: Buffer.isBuffer(body) ? body : Buffer.from(body),
    fields: { deliveryTag: 1, redelivered: false, exchange: `${queue}.dlq`, routingKey: queue, messageCount: 0 },
    properties: { headers: { 'x-sluice-reason': 'log.line: invalid log-line headers: lineNo: expected number', 'x-sluice-queue': queue, 'x-sluice-exchange': 'logs', 'x-sluice-routing-key': 'logs.web.access', 'x-sluice-attempts': 1, 'x-sluice-failed-at': '2026-11-25T21:00:00.000Z', ...headers }, messageId } as unknown as RawMessage['properties'],
  };
}

export function fakeDeadLetters(): DeadLetters & { queues: Map<string, RawMessage[]>; moved: { source: string; headers: unknown }[]; purged: string[] } {
  const queues = new Map(topology.queues.map((q) => [deadLetterQueue(q.name), [] as RawMessage[]]));
  const moved: { source: string; headers: unknown }[] = [];
  const purged: string[] = [];
  return {
    queues,
    moved,
    purged,
    async list() {
      return topology.queues.map((q) => ({ queue: deadLetterQueue(q.name), source: q.name, messages: queues.get(deadLetterQueue(q.name))!.length }));
    },
    async peek(queue, limit) {
      const list = queues.get(queue)!;
      return { messages: list.length, items: list.slice(0, limit).map((m) => describeDeadLetter(m)) };
    },
    async replay(queue, limit) {
      const list = queues.get(queue)!;
      const taken = list.splice(0, Math.min(limit ?? list.length, list.length));
      for (const m of taken) moved.push({ source: queue.replace(/\.dlq$/, ''), headers: replayHeaders(m.properties.headers) });
      return { replayed: taken.length, remaining: list.length };
    },
    async purge(queue) {
      const list = queues.get(queue)!;
      purged.push(queue);
      return { purged: list.splice(0).length };
    },
    async close() {},
  };
}
