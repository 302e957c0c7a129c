// Configuration comes from environment variables only, validated at boot:
// every bad or missing variable is named in one error, before anything connects.
import { z } from 'zod';
import { ConfigError } from './errors.ts';


const url = (protocols: string[]) =>
  z.string().refine((v) => {
    try {
      return protocols.includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`);

/** Variables every function reads. */
export const baseConfigShape = {
  // No defaults: each function connects as its own user (infra/access.ts), never as an administrator by accident.
  AMQP_URL: url(['amqp:', 'amqps:']),
  MYSQL_URL: url(['mysql:']),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Port of the health and metrics endpoint of queue functions (0 = any free port). */
  HEALTH_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  /** Seconds to finish in-flight work after SIGTERM before exiting anyway. */
  SHUTDOWN_TIMEOUT_S: z.coerce.number().positive().default(20),
  /** How long a function waits at boot for the migrate step to have put its schema version in place. */
  SCHEMA_WAIT_S: z.coerce.number().min(0).max(3600).default(60),
};

/** Variables of the shared consumer runtime; each function may override the defaults. */
export const consumerConfigShape = {
  BATCH_SIZE: z.coerce.number().int().min(1).max(5000).default(500),
  BATCH_WAIT_MS: z.coerce.number().int().min(0).max(60_000).default(50),
  MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(8),
  /** Bytes of message bodies in one batch at most (further capped at a third of the server's max_allowed_packet). */
  BATCH_MAX_BYTES: z.coerce.number().int().min(1024).default(4 * 1024 * 1024),
  /**
   * Bytes of message bodies a consumer may hold unacknowledged: its prefetch is this over
   * MESSAGE_MAX_BYTES (at most 2 x BATCH_SIZE). For log lines (1 MiB at most) that is 256
   * messages; measured on apache_logs x10, 0.72-0.82x the throughput of an unbounded prefetch
   * of 1,000 (docs/benchmarks.md), the price of a hard memory bound under hostile lines.
   */
  PREFETCH_MAX_BYTES: z.coerce.number().int().min(1024).default(256 * 1024 * 1024),
  /** The largest body the queue's publishers send (log lines: the trigger's MAX_LINE_BYTES; EV messages are small JSON). */
  MESSAGE_MAX_BYTES: z.coerce.number().int().min(1).default(64 * 1024),
};

export type BaseConfig = z.output<z.ZodObject<typeof baseConfigShape>>;

/** Parse the base variables and a function's own, reporting every bad variable of both at once. */
export function loadFunctionConfig<S extends z.ZodRawShape>(shape: S, env: NodeJS.ProcessEnv = process.env): BaseConfig & z.output<z.ZodObject<S>> {
  const problems: string[] = [];
  const attempt = <T>(load: () => T): T | undefined => {
    try {
      return load();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems);
      return undefined;
    }
  };
  const base = attempt(() => loadConfig(baseConfigShape, env));
  const own = attempt(() => loadConfig(shape, env));
  if (!base || !own) throw new ConfigError(problems);
  return { ...base, ...own };
}

/** Parse `env` against a zod shape, or throw a ConfigError naming every bad variable. */
export function loadConfig<S extends z.ZodRawShape>(shape: S, env: NodeJS.ProcessEnv = process.env): z.output<z.ZodObject<S>> {
  // Empty strings count as unset, as in most shells' `VAR= cmd`.
  const input = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== ''));
  const result = z.object(shape).safeParse(input);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((i) => {
      const name = i.path.join('.');
      if (input[name] === undefined) return `${name} is required`;
      // Never echo a secret; echo any other value with the password of a URL in it masked.
      if (isSecretName(name)) return `${name} is invalid: ${i.message}`;
      return `${name}=${JSON.stringify(redactUrl(String(input[name])))}: ${i.message}`;
    }),
  );
}

export const booleanFromEnv = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

/** Variables whose value is never printed: their name contains PASS (PASSWORD, PASSWD), TOKEN or SECRET. */
export const isSecretName = (name: string): boolean => /PASS|TOKEN|SECRET/i.test(name);

// user:password@ - after a scheme's "//", at the start, or after a separator (text that holds a
// URL, a URL without its scheme or with a malformed one). The last "@" before the path ends the
// userinfo, as in the WHATWG URL parser.
const USERINFO = /(^|[^\w.+-])([^\s/?#@:]*):[^\s/?#]*@/g;
// ?password=... &token=... in a query string.
const SECRET_PARAM = /([?&][^\s=&#]*(?:pass|pwd|token|secret)[^\s=&#]*=)[^\s&#]*/gi;

/**
 * `url` with its password replaced by `***` (`amqp://user:***@host:5672`), and the values of query
 * parameters named like a password, token or secret too; anything else is left as it is. Also
 * takes a URL without a scheme (`user:pass@host`), a malformed one, and text that contains URLs.
 */
export function redactUrl(url: string): string {
  if (!url.includes('@') && !url.includes('=')) return url;
  return url.replace(USERINFO, '$1$2:***@').replace(SECRET_PARAM, '$1***');
}
