import { z } from 'zod';

export const DEV_TOKEN = 'dev-token';

export const configShape = {
  HTTP_PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  HTTP_HOST: z.string().default('0.0.0.0'),
  /** The only directory log runs may read. */
  LOG_DIR: z.string().min(1).default('./logs'),
  /** Bearer token every route but /healthz requires. */
  TRIGGER_TOKEN: z.string().min(8, 'must be at least 8 characters').default(DEV_TOKEN),
  /** Largest body POST /v1/logs accepts. */
  BODY_LIMIT_MB: z.coerce.number().positive().max(1024).default(64),
  /** A run whose trigger reported no progress for this long is taken over by another trigger. */
  RUN_STALE_AFTER_S: z.coerce.number().min(1).max(3600).default(30),
  /** The EV catalog (vehicles.json); the reference copy beside the project by default. */
  EV_CATALOG: z.string().optional(),
};
