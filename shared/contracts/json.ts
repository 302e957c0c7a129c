import { z } from 'zod';
import type { ConsumeMessage } from 'amqplib';
import type { Contract } from '../amqp/consumer.ts';
import { PoisonMessageError } from '../errors.ts';

/** "path.to.field: message; other: message" - what a dead-letter reason or a 400 says. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

/** A contract for JSON message bodies validated by a zod schema. */
export function jsonContract<S extends z.ZodType>(name: string, schema: S): Contract<z.infer<S>> {
  return {
    name,
    decode(msg: ConsumeMessage) {
      let json: unknown;
      try {
        json = JSON.parse(msg.content.toString('utf8'));
      } catch (err) {
        throw new PoisonMessageError(`body is not valid JSON (${(err as Error).message})`);
      }
      const result = schema.safeParse(json);
      if (!result.success) throw new PoisonMessageError(`schema violation: ${describeIssues(result.error)}`);
      return result.data;
    },
  };
}

export const encodeJson = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
