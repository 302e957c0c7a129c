// The data lake: every line, byte for byte, keyed by (run, line number). A message
// carries one line or (batch framing) many: each is stored as its own row, the same
// row either way, and the message is acked once all of them are.
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import type { LogLine } from '../../shared/contracts/logs.ts';

export interface RawLogRow {
  runId: string;
  lineNo: number;
  source: string;
  byteOffset: number;
  /** The file under the trigger's LOG_DIR the line came from (null: an upload, or a message from before the header existed). */
  file: string | null;
  line: Buffer;
  /** The line's real length when `line` holds only its first bytes (the trigger's MAX_LINE_BYTES). */
  truncatedFrom: number | null;
  receivedAt: Date;
}

export interface RawLogStore {
  /** Idempotent: a row already stored is left as it is. */
  insert(rows: RawLogRow[]): Promise<void>;
}

export function createHandler(deps: { store: RawLogStore; now?: () => Date }): BatchHandler<LogLine[]> {
  const now = deps.now ?? (() => new Date());
  return async (items) => {
    const receivedAt = now();
    await deps.store.insert(items.flatMap(({ body }) => body.map(({ runId, lineNo, source, byteOffset, file, line, truncatedFrom }) => ({
        runId, lineNo, source, byteOffset, file: file ?? null, line, truncatedFrom: truncatedFrom ?? null, receivedAt,
      }))));
  };
}
