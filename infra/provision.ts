// The privileged step: the only code that runs with administrator rights. It
// applies the schema migrations, declares the RabbitMQ topology, and creates one
// MySQL user and one RabbitMQ user per function with exactly the rights of
// infra/access.ts. Idempotent: run it before the functions start and after every
// upgrade (`npm run migrate`, the compose service `migrate`, the Kubernetes Job
// `sluice-migrate`). Functions never migrate or declare anything themselves: at
// boot they only check that what they need is there.
import amqp from 'amqplib';
import mysql from 'mysql2/promise';
import type { Logger } from '#shared/log.ts';
import { createPool, waitForDatabase, type Pool } from '#shared/db/pool.ts';
import { migrate } from '#shared/db/migrate.ts';
import { declareTopology } from '#shared/amqp/topology.ts';
import { redactUrl } from '#shared/config.ts';
import { sleep } from '#shared/timing.ts';
import { POLICY_PREFIX, queuePolicies, topology } from './topology.ts';
import { ACCESS, FUNCTIONS, OPERATORS, OPERATOR_ACCESS, RETIRED_FUNCTIONS, amqpPermissions, operatorPermissions, topicPermissions, userOf, type FunctionName, type OperatorName } from './access.ts';

export interface ProvisionOptions {
  /** A MySQL user that may run DDL on the database, create users and grant (e.g. root). */
  mysqlAdminUrl: string;
  /** A RabbitMQ user that may configure the vhost (the vhost is the URL's path). */
  amqpAdminUrl: string;
  /** RabbitMQ's management HTTP API, with an administrator's credentials: http://user:pass@host:15672 */
  rabbitApiUrl: string;
  /** Each function's password (its MySQL and its RabbitMQ user), and each operator role's (its RabbitMQ user). */
  passwords: Record<FunctionName | OperatorName, string>;
  /** The host part of the MySQL users ('%': any). */
  userHost: string;
  log: Logger;
}

export async function provision(opts: ProvisionOptions): Promise<void> {
  const started = performance.now();
  await provisionMysql(opts);
  await provisionRabbit(opts);
  opts.log.info({ ms: Math.round(performance.now() - started), functions: FUNCTIONS.length }, 'schema, topology and function users are in place');
}

async function provisionMysql(opts: ProvisionOptions): Promise<void> {
  const { log } = opts;
  const database = new URL(opts.mysqlAdminUrl).pathname.slice(1);
  const pool = createPool(opts.mysqlAdminUrl, 2);
  try {
    await waitForDatabase(pool);
    await migrate(pool, log);
    for (const fn of FUNCTIONS) {
      const user = mysql.format('?@?', [userOf(fn), opts.userHost]);
      await pool.query(mysql.format(`CREATE USER IF NOT EXISTS ${user} IDENTIFIED BY ?`, [opts.passwords[fn]]));
      // The password and the rights are set anew every time, so a stale grant never survives.
      await pool.query(mysql.format(`ALTER USER ${user} IDENTIFIED BY ?`, [opts.passwords[fn]]));
      await revokeInDatabase(pool, user, database);
      const grants = { schema_migrations: ['SELECT'], ...ACCESS[fn].mysql };
      for (const [table, privileges] of Object.entries(grants)) {
        await pool.query(`GRANT ${privileges.join(', ')} ON ${mysql.escapeId(database)}.${mysql.escapeId(table)} TO ${user}`);
      }
      log.info({ user: userOf(fn), database, tables: Object.keys(grants).length }, 'MySQL user ready');
    }
    for (const fn of RETIRED_FUNCTIONS) {
      await pool.query(mysql.format('DROP USER IF EXISTS ?@?', [userOf(fn), opts.userHost]));
    }
  } finally {
    await pool.end();
  }
}

/**
 * Every right the user has on this database (on the database, and on each of its tables), and no
 * other: two databases on one server (a second checkout, a test database) keep their own grants.
 * The grant tables themselves are not readable without rights on `mysql`, so each table is revoked,
 * and "there is no such grant" is the expected answer for most.
 */
async function revokeInDatabase(pool: Pool, account: string, database: string): Promise<void> {
  const [tables] = (await pool.query('SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [database])) as [{ name: string }[], unknown];
  const revoke = (sql: string) => pool.query(sql).catch((err: { errno?: number }) => {
    // 1141 ER_NONEXISTING_GRANT, 1147 ER_NONEXISTING_TABLE_GRANT
    if (err.errno !== 1141 && err.errno !== 1147) throw err;
  });
  for (const { name } of tables) await revoke(`REVOKE ALL PRIVILEGES ON ${mysql.escapeId(database)}.${mysql.escapeId(name)} FROM ${account}`);
  await revoke(`REVOKE ALL PRIVILEGES ON ${mysql.escapeId(database)}.* FROM ${account}`);
  await revoke(`REVOKE GRANT OPTION ON ${mysql.escapeId(database)}.* FROM ${account}`);
}

async function provisionRabbit(opts: ProvisionOptions): Promise<void> {
  const { log } = opts;
  // A broker that is still starting (compose, Kubernetes) gets a minute to answer.
  const conn = await retrying('RabbitMQ', () => amqp.connect(opts.amqpAdminUrl, { clientProperties: { connection_name: 'sluice-migrate' } }), log);
  try {
    const ch = await conn.createChannel();
    await declareTopology(ch, topology);
    await ch.close();
  } finally {
    await conn.close();
  }
  log.info({ exchanges: topology.exchanges.length, queues: topology.queues.length }, 'RabbitMQ topology declared');

  const vhost = vhostOf(opts.amqpAdminUrl);
  const api = managementApi(opts.rabbitApiUrl);
  const overview = (await retrying("RabbitMQ's management API", () => api('GET', '/api/overview'), log)) as { rabbitmq_version?: string };
  await applyPolicies(api, vhost, overview.rabbitmq_version ?? '', log);
  for (const fn of FUNCTIONS) {
    const user = userOf(fn);
    await api('PUT', `/api/users/${encodeURIComponent(user)}`, { password: opts.passwords[fn], tags: '' });
    await api('PUT', `/api/permissions/${encodeURIComponent(vhost)}/${encodeURIComponent(user)}`, amqpPermissions(fn));
    // Topic permissions are per exchange; drop any the function no longer has.
    const wanted = topicPermissions(fn);
    const existing = (await api('GET', `/api/users/${encodeURIComponent(user)}/topic-permissions`)) as { vhost: string; exchange: string }[];
    for (const old of existing.filter((p) => p.vhost === vhost && !wanted.some((w) => w.exchange === p.exchange))) {
      await api('DELETE', `/api/topic-permissions/${encodeURIComponent(vhost)}/${encodeURIComponent(user)}/${encodeURIComponent(old.exchange)}`);
    }
    for (const p of wanted) await api('PUT', `/api/topic-permissions/${encodeURIComponent(vhost)}/${encodeURIComponent(user)}`, p);
    log.info({ user, vhost, ...amqpPermissions(fn), topics: wanted.map((w) => `${w.exchange}: ${w.write}`) }, 'RabbitMQ user ready');
  }
  // Operators' roles (infra/access.ts OPERATORS): RabbitMQ only, no topic rights (they write to fanout
  // exchanges, if at all), and their tags set anew each time (e.g. `monitoring` for sluice_monitor).
  for (const op of OPERATORS) {
    const user = userOf(op);
    const tags = OPERATOR_ACCESS[op].tags.join(',');
    await api('PUT', `/api/users/${encodeURIComponent(user)}`, { password: opts.passwords[op], tags });
    await api('PUT', `/api/permissions/${encodeURIComponent(vhost)}/${encodeURIComponent(user)}`, operatorPermissions(op));
    const existing = (await api('GET', `/api/users/${encodeURIComponent(user)}/topic-permissions`)) as { vhost: string; exchange: string }[];
    for (const old of existing.filter((p) => p.vhost === vhost)) {
      await api('DELETE', `/api/topic-permissions/${encodeURIComponent(vhost)}/${encodeURIComponent(user)}/${encodeURIComponent(old.exchange)}`);
    }
    log.info({ user, vhost, tags, ...operatorPermissions(op) }, "RabbitMQ operator's user ready");
  }
  for (const fn of RETIRED_FUNCTIONS) await api('DELETE', `/api/users/${encodeURIComponent(userOf(fn))}`, undefined, [404]);
}

/**
 * The topology's policies (infra/topology.ts queuePolicies: delivery limits, dead-letter targets
 * and strategy), set anew every time; a `sluice.` policy the topology no longer has (a retired
 * queue's) is removed. Policies, not queue arguments: they apply to queues that already exist.
 */
async function applyPolicies(api: ReturnType<typeof managementApi>, vhost: string, version: string, log: Logger): Promise<void> {
  const major = Number(/^(\d+)\./.exec(version)?.[1] ?? 4);
  const wanted = queuePolicies(topology, major);
  const v = encodeURIComponent(vhost);
  for (const { name, ...policy } of wanted) await api('PUT', `/api/policies/${v}/${encodeURIComponent(name)}`, policy);
  const existing = (await api('GET', `/api/policies/${v}`)) as { name: string }[];
  for (const old of existing.filter((p) => p.name.startsWith(POLICY_PREFIX) && !wanted.some((w) => w.name === p.name))) {
    await api('DELETE', `/api/policies/${v}/${encodeURIComponent(old.name)}`, undefined, [404]);
  }
  log.info({ vhost, rabbitmq: version, policies: wanted.length }, 'RabbitMQ queue policies in place (delivery limits, dead-letter targets)');
}

/** `fn` again every 2 s for up to a minute while it fails (a service still starting). */
async function retrying<T>(what: string, fn: () => Promise<T>, log: Logger, attempts = 30): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts) throw err;
      if (i === 1) log.warn({ err: (err as Error).message }, `${what} does not answer yet; retrying for a minute`);
      await sleep(2_000);
    }
  }
}

/** The vhost an AMQP URL names ('/' when its path is empty). */
export function vhostOf(amqpUrl: string): string {
  const path = new URL(amqpUrl).pathname;
  return path.length > 1 ? decodeURIComponent(path.slice(1)) : '/';
}

/** A small client of RabbitMQ's management API; errors name the call and the broker's reason. */
function managementApi(baseUrl: string) {
  const url = new URL(baseUrl);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
  url.username = '';
  url.password = '';
  const base = url.toString().replace(/\/$/, '');
  /** `tolerate`: statuses that are an answer, not a failure (e.g. 404 when deleting what is gone). */
  return async (method: string, path: string, body?: unknown, tolerate: number[] = []): Promise<unknown> => {
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
    } catch (err) {
      throw new Error(`RabbitMQ management API at ${redactUrl(baseUrl)} does not answer (${(err as Error).message}); is the rabbitmq_management plugin enabled?`, { cause: err });
    }
    const text = await res.text();
    if (tolerate.includes(res.status)) return null;
    if (!res.ok) throw new Error(`RabbitMQ management API: ${method} ${path} answered ${res.status}: ${text.slice(0, 300)}`);
    return text ? JSON.parse(text) : null;
  };
}
