// The data lake: every line, byte for byte, keyed by (run, line number).
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import type { LogLine } from '../../shared/contracts/logs.ts';

export interface RawLogRow {
  runId: string;
  lineNo: number;
  source: string;
  byteOffset: number;
  line: Buffer;
  receivedAt: Date;
}

export interface RawLogStore {
  /** Idempotent: a row already stored is left as it is. */
  insert(rows: RawLogRow[]): Promise<void>;
}

export function createHandler(deps: { store: RawLogStore; now?: () => Date }): BatchHandler<LogLine> {
  const now = deps.now ?? (() => new Date());
  return async (items) => {
    const receivedAt = now();
    await deps.store.insert(items.map(({ body: { runId, lineNo, source, byteOffset, line } }) => ({ runId, lineNo, source, byteOffset, line, receivedAt })));
  };
}
