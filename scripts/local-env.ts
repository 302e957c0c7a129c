// The local system's credentials (npm start, npm test, npm run migrate): the
// administrators of the local services, and one random password per function,
// made once per checkout and kept in .sluice/secrets.json (git-ignored, 0600).
// Deployments bring their own: compose's .env, Kubernetes Secrets.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { FUNCTIONS, OPERATORS, userOf, type FunctionName, type OperatorName } from '../infra/access.ts';

export const root = path.resolve(import.meta.dirname, '..');

export interface AdminUrls {
  mysqlAdminUrl: string;
  amqpAdminUrl: string;
  rabbitApiUrl: string;
}

/** The administrators of the local services (scripts/services.sh makes `sluice` a MySQL administrator of its databases). */
export function localAdmin(env: NodeJS.ProcessEnv = process.env): AdminUrls {
  return {
    mysqlAdminUrl: env.MYSQL_ADMIN_URL ?? 'mysql://sluice:sluice@127.0.0.1:3306/sluice',
    amqpAdminUrl: env.AMQP_ADMIN_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
    rabbitApiUrl: env.RABBITMQ_API_URL ?? 'http://guest:guest@127.0.0.1:15672',
  };
}

/** Each function's (and each operator role's) password, created on first use. */
export function localPasswords(dir = path.join(root, '.sluice')): Record<FunctionName | OperatorName, string> {
  const file = path.join(dir, 'secrets.json');
  const known: Partial<Record<FunctionName | OperatorName, string>> = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  let changed = false;
  for (const fn of [...FUNCTIONS, ...OPERATORS]) {
    if (!known[fn]) (known[fn] = randomBytes(18).toString('base64url')), (changed = true);
  }
  if (changed) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(file, `${JSON.stringify(known, null, 2)}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
  }
  return known as Record<FunctionName | OperatorName, string>;
}

/** An operator role's AMQP URL (e.g. the trigger's DLQ_AMQP_URL): the administrator's host and vhost, the role's own user. */
export function operatorAmqpUrl(op: OperatorName, password: string, admin: Pick<AdminUrls, 'amqpAdminUrl'>): string {
  const u = new URL(admin.amqpAdminUrl);
  u.username = userOf(op);
  u.password = password;
  return u.toString();
}

/**
 * The monitoring operator's management API URL (the trigger's RABBITMQ_MONITOR_URL): the
 * administrator's RABBITMQ_API_URL with sluice_monitor's user and password instead.
 */
export function monitorApiUrl(password: string, admin: Pick<AdminUrls, 'rabbitApiUrl'>): string {
  const u = new URL(admin.rabbitApiUrl);
  u.username = userOf('monitor');
  u.password = password;
  return u.toString();
}

/** A function's AMQP_URL and MYSQL_URL: the administrators' hosts, vhost and database, the function's own user. */
export function functionUrls(fn: FunctionName, password: string, admin: Pick<AdminUrls, 'mysqlAdminUrl' | 'amqpAdminUrl'>): { AMQP_URL: string; MYSQL_URL: string } {
  const as = (url: string) => {
    const u = new URL(url);
    u.username = userOf(fn);
    u.password = password;
    return u.toString();
  };
  return { AMQP_URL: as(admin.amqpAdminUrl), MYSQL_URL: as(admin.mysqlAdminUrl) };
}
