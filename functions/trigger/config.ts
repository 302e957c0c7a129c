import { z } from 'zod';
import { loadConfig, loadFunctionConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';
import { MAX_LINE_BYTES } from '../../shared/weblog/lines.ts';
import { LOG_BATCH_MAX_LINES } from '../../shared/contracts/logs.ts';
import { BATCH_LIMITS, FRAMINGS, type Framing } from './framing.ts';

export const DEV_TOKEN = 'dev-token';

/**
 * The framing of a log run or upload that names none (README, "Framing"); LOG_FRAMING overrides it.
 * Batch: in `npm run bench` (2026-11-26, quiet machine) it stored apache_logs x10 at 3.3x and x50 at
 * 2.4x the lines/s of line framing, with a quarter of the CPU, under the same tests.
 */
export const DEFAULT_FRAMING: Framing = 'batch';

export const configShape = {
  HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  /** Loopback by default: the development token is only accepted there (see exposureProblems). */
  HTTP_HOST: z.string().default('127.0.0.1'),
  /** The only directory log runs may read. */
  LOG_DIR: z.string().min(1).default('./logs'),
  /** Bearer token every route but /healthz requires. */
  TRIGGER_TOKEN: z.string().min(8, 'must be at least 8 characters').default(DEV_TOKEN),
  /** Longest log line published whole; a longer one is published cut to it, with its real length (the consumers keep it flagged). */
  MAX_LINE_BYTES: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(MAX_LINE_BYTES),
  /** How log runs and uploads that name no `framing` publish their lines: `line` (a message each) or `batch` (many lines to a message). */
  LOG_FRAMING: z.enum(FRAMINGS).default(DEFAULT_FRAMING),
  /** Batch framing: most lines in one message. */
  FRAMING_BATCH_LINES: z.coerce.number().int().min(1).max(LOG_BATCH_MAX_LINES).default(BATCH_LIMITS.maxLines),
  /** Batch framing: most bytes of body in one message (a longer line goes alone). */
  FRAMING_BATCH_BYTES: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(BATCH_LIMITS.maxBytes),
  /** Batch framing: how long a line read may wait for more lines before its message is published. */
  FRAMING_LINGER_MS: z.coerce.number().int().min(0).max(60_000).default(BATCH_LIMITS.lingerMs),
  /** Largest body POST /v1/logs accepts (uploads are streamed: this bounds a run, not memory). */
  BODY_LIMIT_MB: z.coerce.number().positive().max(1024 * 1024).default(64),
  /**
   * Messages a run keeps published and not yet confirmed by the broker; publishing waits past it
   * (at most MAX_LINE_BYTES each: this bounds a run's memory). The shared publisher allows 2,000
   * in flight over all runs.
   */
  RUN_MAX_IN_FLIGHT: z.coerce.number().int().min(1).max(100_000).default(1_000),
  /** Runs this trigger executes at once (uploads in progress included); past it, starting one answers 429. */
  MAX_CONCURRENT_RUNS: z.coerce.number().int().min(1).max(10_000).default(8),
  /** Largest number of messages (readings + clock ticks) one EV run may publish. */
  MAX_RUN_MESSAGES: z.coerce.number().int().min(1).max(1e12).default(5_000_000),
  /** A run whose trigger reported no progress for this long is taken over by another trigger. */
  RUN_STALE_AFTER_S: z.coerce.number().min(1).max(3600).default(30),
  /** An EV catalog file that replaces the one bundled with the code (functions/trigger/ev-vehicles.json). */
  EV_CATALOG: z.string().optional(),
  /**
   * The dead-letter operator, sluice_dlq (infra/access.ts OPERATORS): GET/POST /v1/dlq… run as this
   * RabbitMQ user, never as the trigger's own; unset, those routes answer 503 naming this variable.
   */
  DLQ_AMQP_URL: z.string().refine((v) => {
    try {
      return ['amqp:', 'amqps:'].includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, 'must be a URL starting with amqp:// or amqps://').optional(),
  /**
   * The monitoring operator, sluice_monitor (infra/access.ts OPERATORS): RabbitMQ's management API
   * as that user (http://sluice_monitor:password@host:15672, tagged `monitoring`, no right on any
   * queue or exchange), read by the dashboard's pipeline-health panel; unset, the panel says so.
   * Not the administrator's RABBITMQ_API_URL, which only the migrate step has.
   */
  RABBITMQ_MONITOR_URL: z.string().refine((v) => {
    try {
      return ['http:', 'https:'].includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, 'must be a URL starting with http:// or https://').optional(),
  /** How often the dashboard's stream reads runs and changed stat minutes (once for every open page). */
  DASHBOARD_POLL_MS: z.coerce.number().int().min(100).max(60_000).default(1000),
};

/** Hosts that only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The development token is public: it is refused unless the API listens on loopback only. */
export function exposureProblems(config: { TRIGGER_TOKEN: string; HTTP_HOST: string }): string[] {
  if (config.TRIGGER_TOKEN !== DEV_TOKEN || isLoopback(config.HTTP_HOST)) return [];
  return [
    `TRIGGER_TOKEN is the development default while HTTP_HOST=${JSON.stringify(config.HTTP_HOST)} is reachable from other machines: ` +
      'set TRIGGER_TOKEN to a secret of your own (at least 8 characters), or HTTP_HOST to 127.0.0.1, ::1 or localhost',
  ];
}

/** Every problem of the trigger's configuration (the variables each, then the combination), or none. */
export function triggerConfigProblems(env: NodeJS.ProcessEnv = process.env): string[] {
  try {
    return exposureProblems(loadFunctionConfig(configShape, env));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    let exposure: string[] = [];
    try {
      exposure = exposureProblems(loadConfig({ TRIGGER_TOKEN: configShape.TRIGGER_TOKEN, HTTP_HOST: configShape.HTTP_HOST }, env));
    } catch {
      // one of the two is itself invalid, and already named
    }
    return [...err.problems, ...exposure];
  }
}
