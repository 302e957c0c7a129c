// migrate: the privileged one-shot step (infra/provision.ts) as a command and an image.
//   npm run migrate                  local services, passwords from .sluice/secrets.json
//   node dist/migrate/index.mjs      (the image) everything from the environment:
//     MYSQL_ADMIN_URL, AMQP_ADMIN_URL, RABBITMQ_API_URL, SLUICE_PASSWORD_<FUNCTION> for each function
//     and SLUICE_PASSWORD_<ROLE> for each operator role (SLUICE_PASSWORD_DLQ, SLUICE_PASSWORD_MONITOR)
import { z } from 'zod';
import { loadConfig, redactUrl } from '../../shared/config.ts';
import { ConfigError, errorMessage } from '../../shared/errors.ts';
import { createLogger } from '../../shared/log.ts';
import { FUNCTIONS, OPERATORS, passwordVariable, type FunctionName, type OperatorName } from '../access.ts';
import { provision } from '../provision.ts';

const local = process.argv.includes('--local');
const log = createLogger('migrate');

const urlOf = (protocols: string[]) =>
  z.string().refine((v) => URL.canParse(v) && protocols.includes(new URL(v).protocol), `must be a URL starting with ${protocols.join(' or ')}//`);
const password = z.string().regex(/^[A-Za-z0-9._~-]{12,128}$/, 'must be 12-128 URL-safe characters (letters, digits, - . _ ~)');
const shape = {
  MYSQL_ADMIN_URL: urlOf(['mysql:']),
  AMQP_ADMIN_URL: urlOf(['amqp:', 'amqps:']),
  RABBITMQ_API_URL: urlOf(['http:', 'https:']),
  DB_USER_HOST: z.string().min(1).default('%'),
  ...Object.fromEntries([...FUNCTIONS, ...OPERATORS].map((fn) => [passwordVariable(fn), password])),
};

let env: NodeJS.ProcessEnv = process.env;
if (local) {
  // Only the local command reads the checkout's own secrets; an image never does.
  const { localAdmin, localPasswords } = await import('../../scripts/local-env.ts');
  const admin = localAdmin();
  const passwords = localPasswords();
  env = {
    MYSQL_ADMIN_URL: admin.mysqlAdminUrl,
    AMQP_ADMIN_URL: admin.amqpAdminUrl,
    RABBITMQ_API_URL: admin.rabbitApiUrl,
    ...Object.fromEntries([...FUNCTIONS, ...OPERATORS].map((fn) => [passwordVariable(fn), passwords[fn]])),
    ...process.env,
  };
}

let config: z.output<z.ZodObject<typeof shape>>;
try {
  config = loadConfig(shape, env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`migrate: ${err.message}\n`);
  process.exit(78);
}
const c = config as Record<string, string>;
try {
  await provision({
    mysqlAdminUrl: config.MYSQL_ADMIN_URL,
    amqpAdminUrl: config.AMQP_ADMIN_URL,
    rabbitApiUrl: config.RABBITMQ_API_URL,
    userHost: config.DB_USER_HOST,
    passwords: Object.fromEntries([...FUNCTIONS, ...OPERATORS].map((fn) => [fn, c[passwordVariable(fn)]!])) as Record<FunctionName | OperatorName, string>,
    log,
  });
} catch (err) {
  log.fatal({ err: errorMessage(err), mysql: redactUrl(config.MYSQL_ADMIN_URL), amqp: redactUrl(config.AMQP_ADMIN_URL) }, 'migrate failed');
  process.exit(1);
}
