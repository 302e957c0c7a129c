import { z } from 'zod';
import { QUEUES } from '../../infra/topology.ts';
import { consumerConfigShape } from '../../shared/config.ts';
import { DEFAULT_RULES, parseRules } from './rules.ts';

export const QUEUE = QUEUES.notifyEmail;
/** Web-log alerts (logs.alert.<rule>, published by log-alerts), mailed to ALERT_EMAIL. */
export const ALERTS_QUEUE = QUEUES.notifyAlerts;

export const configShape = {
  ...consumerConfigShape,
  // No linger: events come a few at a time, and each one waited on is an email later. A busy
  // consumer still batches what queued while it wrote (bench latency: the event -> outbox stage
  // went from 77 to 24 ms p50 without the 50 ms linger).
  BATCH_WAIT_MS: consumerConfigShape.BATCH_WAIT_MS.default(0),
  /** SES API endpoint; unset in production (real AWS SES), the aws-ses-v2-local emulator locally. */
  SES_ENDPOINT: z.url().optional(),
  AWS_REGION: z.string().min(1).default('us-east-1'),
  SES_FROM: z.email().default('alerts@sluice.example'),
  /** The operator's address for fault, offline, stall, SoC-drop, over-limit and invalid-reading alerts, and for web-log alerts. */
  ALERT_EMAIL: z.email().default('operator@sluice.example'),
  /** Who gets which event: `type=owner+operator,...` (see rules.ts). */
  EMAIL_RULES: z
    .string()
    .default(DEFAULT_RULES)
    .transform((v, ctx) => {
      try {
        return parseRules(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
  /** Operator alerts for one charge point within this window go out as one email. */
  GROUP_WINDOW_S: z.coerce.number().min(0).max(3600).default(30),
  /** Most emails per second handed to SES (SES's default production quota is 14). */
  SES_MAX_PER_SECOND: z.coerce.number().positive().max(10_000).default(14),
  /** Longest SES call; past it the mail is 'unknown' (SES may have read it), never resent. */
  SES_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(15_000),
  /** Attempts per email on throttling (or SES not reached) before it is marked failed. */
  SES_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(6),
  /** How often the outbox is polled for due emails. */
  OUTBOX_POLL_MS: z.coerce.number().int().min(10).max(60_000).default(200),
};
