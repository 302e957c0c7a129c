import { z } from 'zod';
import { ALERT_RULES, type AlertRule } from '../../shared/contracts/alerts.ts';

const rulesList = z
  .string()
  .transform((v, ctx) => {
    const list = v.split(',').map((s) => s.trim()).filter(Boolean);
    const unknown = list.filter((r) => !(ALERT_RULES as readonly string[]).includes(r));
    if (unknown.length) {
      ctx.addIssue({ code: 'custom', message: `unknown rule ${unknown.map((r) => `'${r}'`).join(', ')} (known: ${ALERT_RULES.join(', ')})` });
      return z.NEVER;
    }
    return [...new Set(list)] as AlertRule[];
  });

export const configShape = {
  /** The rules evaluated, comma-separated (default: all three). */
  ALERT_RULES: rulesList.default([...ALERT_RULES]),
  /** error_rate: a minute breaches when more than this ratio of its requests were answered 5xx ... */
  ALERT_ERROR_RATIO: z.coerce.number().min(0).max(1).default(0.05),
  /** ... and it has at least this many requests. */
  ALERT_ERROR_MIN_REQUESTS: z.coerce.number().int().min(1).default(20),
  /** scanner: one client IP with more than this many 4xx answers in a minute. */
  ALERT_SCANNER_4XX: z.coerce.number().int().min(1).default(50),
  /** silent: a followed source whose lines have not moved for this many seconds (wall clock). */
  ALERT_SILENT_S: z.coerce.number().positive().max(7 * 86_400).default(300),
  /** Clean complete minutes after the last breaching one that resolve an incident (more damps flapping). */
  ALERT_CLEAR_MINUTES: z.coerce.number().int().min(1).max(1440).default(1),
  /** The latest minute of a source counts as complete once it has not moved for this many seconds. */
  ALERT_SETTLE_S: z.coerce.number().min(0).max(3600).default(30),
  /** Offending paths (error_rate) or clients (scanner) an alert lists. */
  ALERT_TOP_N: z.coerce.number().int().min(1).max(10).default(5),
  /** How often the aggregates are read. */
  ALERT_POLL_MS: z.coerce.number().int().min(50).max(60_000).default(1_000),
  /**
   * Each poll reads the minutes stamped since the last one less this slack: log-clean stamps
   * a row inside its transaction, which may commit a little later than the stamp.
   */
  ALERT_SLACK_S: z.coerce.number().min(0).max(600).default(10),
};
