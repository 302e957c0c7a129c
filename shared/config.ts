// Configuration comes from environment variables only, validated at boot:
// every bad or missing variable is named in one error, before anything connects.
import { z } from 'zod';
import { ConfigError } from './errors.ts';

export const DEFAULTS = {
  AMQP_URL: 'amqp://guest:guest@127.0.0.1:5672',
  MYSQL_URL: 'mysql://sluice:sluice@127.0.0.1:3306/sluice',
} as const;

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
  AMQP_URL: url(['amqp:', 'amqps:']).default(DEFAULTS.AMQP_URL),
  MYSQL_URL: url(['mysql:']).default(DEFAULTS.MYSQL_URL),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Port of the health and metrics endpoint of queue functions (0 = any free port). */
  HEALTH_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  /** Seconds to finish in-flight work after SIGTERM before exiting anyway. */
  SHUTDOWN_TIMEOUT_S: z.coerce.number().positive().default(20),
};

/** Variables of the shared consumer runtime; each function may override the defaults. */
export const consumerConfigShape = {
  BATCH_SIZE: z.coerce.number().int().min(1).max(5000).default(500),
  BATCH_WAIT_MS: z.coerce.number().int().min(0).max(60_000).default(50),
  MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(8),
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
      return input[name] === undefined ? `${name} is required` : `${name}=${JSON.stringify(input[name])}: ${i.message}`;
    }),
  );
}

export const booleanFromEnv = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
