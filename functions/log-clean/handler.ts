// The clean store: parse each line into a structured request. A line that
// cannot be parsed (or does not fit the table) is kept in the rejects with the
// reason: nothing is dropped.
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import type { LogLine } from '../../shared/contracts/logs.ts';
import { parseAccessLine, type WebRequest } from '../../shared/weblog/parse.ts';

export interface RequestRow extends WebRequest {
  runId: string;
  lineNo: number;
  source: string;
}
export interface RejectRow {
  runId: string;
  lineNo: number;
  source: string;
  line: Buffer;
  reason: string;
  receivedAt: Date;
}

export interface CleanLogStore {
  /** Both idempotent on (run_id, line_no). */
  insertRequests(rows: RequestRow[]): Promise<void>;
  insertRejects(rows: RejectRow[]): Promise<void>;
}

/** Column widths of web_requests (infra/migrations/002_weblogs.sql) for the bounded text fields. */
const MAX_LENGTH: Partial<Record<keyof WebRequest, number>> = {
  clientIp: 255, forwardedFor: 1024, vhost: 255, remoteUser: 255, method: 32, protocol: 32,
  request: 65_535, path: 65_535, query: 65_535, referrer: 65_535, userAgent: 65_535,
};

export function checkRow(r: WebRequest): string | null {
  for (const [field, max] of Object.entries(MAX_LENGTH) as [keyof WebRequest, number][]) {
    const v = r[field];
    // Byte length: the TEXT limits are in bytes.
    if (typeof v === 'string' && (v.length > max || (max > 1024 && Buffer.byteLength(v) > max))) {
      return `${field} is longer than ${max} characters`;
    }
  }
  if (r.status < 0 || r.status > 32767) return `status ${r.status} out of range`;
  return null;
}

export function createHandler(deps: { store: CleanLogStore; now?: () => Date }): BatchHandler<LogLine> {
  const now = deps.now ?? (() => new Date());
  return async (items) => {
    const requests: RequestRow[] = [];
    const rejects: RejectRow[] = [];
    const receivedAt = now();
    for (const { body } of items) {
      const { runId, lineNo, source, line } = body;
      const parsed = parseAccessLine(line.toString('utf8'));
      const reason = parsed.ok ? checkRow(parsed.value) : parsed.reason;
      if (parsed.ok && reason === null) requests.push({ ...parsed.value, runId, lineNo, source });
      else rejects.push({ runId, lineNo, source, line, reason: (reason ?? 'unknown').slice(0, 512), receivedAt });
    }
    await Promise.all([deps.store.insertRequests(requests), deps.store.insertRejects(rejects)]);
  };
}
