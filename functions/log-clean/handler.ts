// The clean store: parse each line into a structured request. A line that
// cannot be parsed (or was cut short before it reached us) is kept in the
// rejects with the reason; a field longer than its column is cut to fit and
// the request is kept, naming the cut fields: nothing is dropped. Each request
// also says what it counts for in the streaming aggregates (count.ts), which the
// store adds up in the transaction that stores the request.
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import type { LogLine } from '../../shared/contracts/logs.ts';
import { parseAccessLine, type WebRequest } from '../../shared/weblog/parse.ts';
import { truncateBytes, truncateChars } from './truncate.ts';
import { countRequest, type CountedRequest } from './count.ts';

export { truncateBytes, truncateChars };

export interface RequestRow extends WebRequest {
  runId: string;
  lineNo: number;
  source: string;
  /** Columns whose value was cut to fit, comma-separated in table order (e.g. "referrer,user_agent"); null when none. */
  truncated: string | null;
  /** What the request counts for in the aggregates (from the request as parsed, before any cut); null when they are off. */
  counted: CountedRequest | null;
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
  /** Both idempotent on (run_id, line_no); insertRequests counts each request into the aggregates once, when it stores it. */
  insertRequests(rows: RequestRow[]): Promise<void>;
  insertRejects(rows: RejectRow[]): Promise<void>;
}

type TextField = 'clientIp' | 'forwardedFor' | 'vhost' | 'remoteUser' | 'request' | 'method' | 'path' | 'query' | 'protocol' | 'referrer' | 'userAgent';

/**
 * The bounded text columns of web_requests (infra/migrations/002_weblogs.sql),
 * in table order. The tables are utf8mb4: VARCHAR(n) holds n characters (code
 * points), TEXT holds 65,535 bytes whatever the characters.
 */
const COLUMNS: readonly { field: TextField; column: string; max: number; unit: 'chars' | 'bytes' }[] = [
  { field: 'clientIp', column: 'client_ip', max: 255, unit: 'chars' },
  { field: 'forwardedFor', column: 'forwarded_for', max: 1024, unit: 'chars' },
  { field: 'vhost', column: 'vhost', max: 255, unit: 'chars' },
  { field: 'remoteUser', column: 'remote_user', max: 255, unit: 'chars' },
  { field: 'request', column: 'request', max: 65_535, unit: 'bytes' },
  { field: 'method', column: 'method', max: 32, unit: 'chars' },
  { field: 'path', column: 'path', max: 65_535, unit: 'bytes' },
  { field: 'query', column: 'query', max: 65_535, unit: 'bytes' },
  { field: 'protocol', column: 'protocol', max: 32, unit: 'chars' },
  { field: 'referrer', column: 'referrer', max: 65_535, unit: 'bytes' },
  { field: 'userAgent', column: 'user_agent', max: 65_535, unit: 'bytes' },
];

// web_requests.truncated (VARCHAR(255)) holds the names of the cut columns:
// all eleven joined take 96 characters.

const REASON_MAX_CHARS = 512; // log_rejects.reason VARCHAR(512)
const DATETIME_MIN_MS = Date.UTC(1000, 0, 1); // DATETIME range, in UTC as the pool writes it
const DATETIME_END_MS = Date.UTC(10000, 0, 1);

/**
 * Fits a parsed request to web_requests: every text field longer than its
 * column is cut to fit. Returns the row to store and the names of the cut
 * columns (null when nothing was cut). Cutting keeps the request, which a
 * reject would not: the other fields (time, status, client) still count.
 */
export function fitRow(r: WebRequest): { row: WebRequest; truncated: string | null } {
  let row = r;
  let truncated: string | null = null;
  for (const { field, column, max, unit } of COLUMNS) {
    const v = row[field];
    if (v === null) continue;
    const cut = unit === 'chars' ? truncateChars(v, max) : truncateBytes(v, max);
    if (cut === v) continue;
    if (row === r) row = { ...r }; // copy on the first cut only: nearly every row fits
    row[field] = cut;
    truncated = truncated === null ? column : `${truncated},${column}`;
  }
  return { row, truncated };
}

/**
 * What no cut can fix, checked here so that one bad value becomes a reject
 * instead of failing the whole batch's INSERT. The parser already guarantees
 * these; this guards against it changing.
 */
export function checkRow(r: WebRequest): string | null {
  if (!Number.isInteger(r.status) || r.status < 100 || r.status > 599) return `status ${r.status} outside 100..599`;
  const t = r.ts.getTime();
  if (!(t >= DATETIME_MIN_MS && t < DATETIME_END_MS)) return `timestamp ${String(r.ts)} outside the DATETIME range (years 1000..9999)`;
  if (r.bytes !== null && !(Number.isSafeInteger(r.bytes) && r.bytes >= 0)) return `bytes ${r.bytes} out of range`;
  return null;
}

/** Reason for a line the publisher cut to its first `kept` bytes (its real length: `truncatedFrom`). */
export function truncatedLineReason(truncatedFrom: number, kept: number): string {
  if (truncatedFrom > kept) {
    return `line is ${truncatedFrom} bytes, longer than the ${kept}-byte limit; the lake keeps its first ${kept} bytes`;
  }
  // A publisher bug, but the header still says the body is not the whole line: do not parse it.
  return `line marked as cut short (truncatedFrom ${truncatedFrom}) but the body holds ${kept} bytes; not parsed`;
}

/** `aggregates` false: requests are not worked out for the aggregates (AGGREGATES=false). */
/** A message holds one line or (batch framing) many; each is a request or a reject of its own, keyed as the same line in a message of its own. */
export function createHandler(deps: { store: CleanLogStore; now?: () => Date; aggregates?: boolean }): BatchHandler<LogLine[]> {
  const now = deps.now ?? (() => new Date());
  const aggregates = deps.aggregates ?? true;
  return async (items) => {
    const requests: RequestRow[] = [];
    const rejects: RejectRow[] = [];
    const receivedAt = now();
    // A publisher that resumes may send a line twice, even into one batch: the first one stands.
    const seen = new Set<string>();
    for (const body of items.flatMap((item) => item.body)) {
      const { runId, lineNo, source, line, truncatedFrom } = body;
      const key = `${runId}\0${lineNo}`;
      if (seen.has(key)) continue;
      seen.add(key);
      let reason: string;
      if (truncatedFrom !== undefined) {
        // Only the line's first bytes are here: parsing them could yield a row that
        // looks complete (e.g. a user agent cut mid-way), so the line goes to the rejects.
        reason = truncatedLineReason(truncatedFrom, line.length);
      } else {
        const parsed = parseAccessLine(line.toString('utf8'));
        if (parsed.ok) {
          const { row, truncated } = fitRow(parsed.value);
          const problem = checkRow(row);
          if (problem === null) {
            requests.push({ ...row, runId, lineNo, source, truncated, counted: aggregates ? countRequest(body, parsed.value) : null });
            continue;
          }
          reason = problem;
        } else {
          reason = parsed.reason;
        }
      }
      rejects.push({ runId, lineNo, source, line, reason: truncateChars(reason, REASON_MAX_CHARS), receivedAt });
    }
    await Promise.all([deps.store.insertRequests(requests), deps.store.insertRejects(rejects)]);
  };
}
