// What the dashboard's event stream (GET /v1/events) carries: shared by the server
// (functions/trigger/dashboard.ts) and the page (./main.ts). Types only, no imports,
// so both type-check it (the page with the DOM library, the server with Node's).

export interface RunView {
  id: string;
  kind: 'logs' | 'ev';
  state: 'running' | 'stopping' | 'stopped' | 'done' | 'failed';
  source: string | null;
  file: string | null;
  follow: boolean;
  alerts: boolean;
  lines: number;
  published: number;
  /** Messages the broker confirmed per second over the last poll interval (0 once ended). */
  rate: number;
  /** Bytes of the file read so far over its size (a one-file replay), else null. */
  fraction: number | null;
  error: string | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

/** One row of log_stats_minute as log-clean last left it: absolute values, so applying it twice is harmless. */
export interface MinuteRow {
  source: string;
  /** ISO instant of the minute's start (the log's own time). */
  minute: string;
  requests: number;
  bytes: number;
  visitors: number;
  status: { '1xx': number; '2xx': number; '3xx': number; '4xx': number; '5xx': number };
}

/** First and last minute holding data, per source. */
export interface Extent { source: string; first: string; last: string }

export interface MinutesEvent { rows: MinuteRow[]; extents: Extent[] }

export interface EvFeedItem { eventId: string; type: string; severity: string; ts: string; sessionId: string; summary: string }

export interface EvSummary {
  /** The latest EV run the panel describes (null: none yet). */
  runId: string | null;
  runState: string | null;
  sessionsByStatus: Record<string, number>;
  eventsByType: Record<string, number>;
  /** Newest first. */
  feed: EvFeedItem[];
  /** Emails of the run by outbox status; null with `emailsUnavailable` saying why. */
  emails: Record<string, number> | null;
  emailsUnavailable: string | null;
  chargePoints: { id: string; sessions: number; charging: number; completed: number; faults: number; energyKwh: number }[];
}

export interface QueueHealth {
  name: string;
  messages: number;
  ready: number;
  unacked: number;
  consumers: number;
  /** Messages per second: published into it, and acknowledged by its consumers. */
  publishRate: number;
  ackRate: number;
  retry: number;
  dlq: number;
}

export interface FunctionHealth {
  name: string;
  /** Open connections of its broker user in this vhost: one per process. */
  instances: number;
  queues: string[];
  health: 'ok' | 'degraded' | 'down';
  reason: string | null;
}

export interface HealthSnapshot {
  /** null with `unavailable` saying why (RABBITMQ_MONITOR_URL unset, the API unreachable, refused). */
  queues: QueueHealth[] | null;
  functions: FunctionHealth[] | null;
  unavailable: string | null;
  at: string;
}

export interface Snapshot {
  runs: RunView[];
  extents: Extent[];
  ev: EvSummary | null;
  health: HealthSnapshot | null;
}

export interface StreamEvents {
  snapshot: Snapshot;
  runs: { runs: RunView[] };
  minutes: MinutesEvent;
  ev: EvSummary;
  health: HealthSnapshot;
}
export type StreamEventName = keyof StreamEvents;
