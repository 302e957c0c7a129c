// Composition helpers for the entry files: boot a function (config, logger,
// metrics, database, broker), expose /healthz and /metrics, and stop gracefully
// on SIGTERM/SIGINT, all within SHUTDOWN_TIMEOUT_S (below the pod's grace period):
//   1. readiness off at once (/healthz answers 503: no new traffic is routed here);
//   2. the stops, in reverse order of setup: stop taking work (cancel the consumers),
//      finish the batch in flight and settle it (a held batch is handed back at once),
//      flush the publisher, close AMQP and MySQL;
//   3. the health server, last: it answers 503 until the process exits.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { z } from 'zod';
import { consumerConfigShape, loadFunctionConfig, type BaseConfig } from './config.ts';
import { ConfigError, errorMessage } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { createPool, waitForDatabase, type Pool, type PoolOptions } from './db/pool.ts';
import { waitForSchema } from './db/schema.ts';
import { connectAmqp, type AmqpClient } from './amqp/connection.ts';
import { checkQueues, declaredQueue } from './amqp/topology.ts';
import { createPublisher, type Publisher } from './amqp/publisher.ts';
import { startConsumer, type BatchHandler, type Consumer, type Contract } from './amqp/consumer.ts';

type ConsumerConfig = z.output<z.ZodObject<typeof consumerConfigShape>>;

export interface Deps<C> {
  name: string;
  config: C;
  log: Logger;
  metrics: Metrics;
  pool: Pool;
  amqp: AmqpClient;
  publisher: Publisher;
  /** Register cleanup, run in reverse order on shutdown; `last`: after every other one (in order of registration). */
  onStop(fn: () => Promise<void> | void, opts?: { last?: boolean }): void;
  /** True from the moment SIGTERM/SIGINT arrives: the function is draining and not ready. */
  readonly stopping: boolean;
}

/** Boots the common dependencies, or exits with a clear message (config errors name every variable). */
export async function boot<S extends z.ZodRawShape>(name: string, shape: S, opts: { pool?: PoolOptions } = {}): Promise<Deps<BaseConfig & z.output<z.ZodObject<S>>>> {
  const bootStarted = performance.now();
  let config: BaseConfig & z.output<z.ZodObject<S>>;
  try {
    config = loadFunctionConfig(shape);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${name}: ${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const log = createLogger(name, config.LOG_LEVEL);
  const stops: (() => Promise<void> | void)[] = [];
  const lastStops: (() => Promise<void> | void)[] = [];
  const onStop = (fn: () => Promise<void> | void, o: { last?: boolean } = {}) => void (o.last ? lastStops : stops).push(fn);
  let stopping = false;

  const shutdown = async (signal: string) => {
    if (stopping) return;
    // First of all, and synchronously: from here on readiness answers 503.
    stopping = true;
    log.info({ signal, graceS: config.SHUTDOWN_TIMEOUT_S }, 'stopping: not ready; draining');
    const force = setTimeout(() => {
      log.error('graceful stop timed out; exiting');
      process.exit(1);
    }, config.SHUTDOWN_TIMEOUT_S * 1000);
    force.unref();
    for (const fn of [...stops.reverse(), ...lastStops]) {
      try {
        await fn();
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'error during stop');
      }
    }
    log.info('stopped');
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.on('unhandledRejection', (err) => log.error({ err: errorMessage(err) }, 'unhandled rejection'));

  try {
    const metrics = createMetrics(name);
    const pool = createPool(config.MYSQL_URL, undefined, opts.pool);
    onStop(() => pool.end());
    // MySQL and RabbitMQ at the same time: a start waits for the slower of the two, not for both in turn.
    const database = (async () => {
      await waitForDatabase(pool).catch((err) => {
        const denied = (err as { code?: string }).code === 'ER_ACCESS_DENIED_ERROR';
        throw denied ? new Error(`${errorMessage(err)}: each function has its own MySQL user, created by \`npm run migrate\`; check MYSQL_URL`) : err;
      });
      // The schema is the migrate step's job (infra/provision.ts); a function only checks it is there.
      await waitForSchema(pool, log, undefined, config.SCHEMA_WAIT_S * 1000);
    })();
    const broker = (async () => {
      const amqp = await connectAmqp({ url: config.AMQP_URL, name, log });
      onStop(() => amqp.close());
      const publisher = await createPublisher(amqp, { log, metrics });
      onStop(() => publisher.close());
      return { amqp, publisher };
    })();
    // A MySQL problem stops the start at once; a RabbitMQ one once MySQL is settled, so that
    // when both are wrong the MySQL one is named, as when the two were checked in turn.
    const [, { amqp, publisher }] = await Promise.all([database, broker.catch((err: unknown) => database.then(() => Promise.reject(err)))]);
    log.info({ ms: Math.round(performance.now() - bootStarted) }, 'connected to MySQL and RabbitMQ');
    return {
      name, config, log, metrics, pool, amqp, publisher, onStop,
      get stopping() {
        return stopping;
      },
    };
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, 'boot failed');
    process.exit(1);
  }
}

/**
 * Serve /healthz (200 when ready, 503 otherwise, and 503 from the moment the function stops) and
 * /metrics on HEALTH_PORT. The server closes after every other stop: it tells the truth while draining.
 */
export async function serveHealth(deps: Deps<{ HEALTH_PORT: number }>, ready: () => boolean): Promise<Server> {
  const server = createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('content-type', deps.metrics.registry.contentType);
      return res.end(await deps.metrics.registry.metrics());
    }
    if (req.url === '/healthz' || req.url === '/readyz') {
      const ok = !deps.stopping && ready();
      res.statusCode = ok ? 200 : 503;
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify({ ok, amqp: deps.amqp.connected, ...(deps.stopping ? { stopping: true } : {}) }));
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(deps.config.HEALTH_PORT, '0.0.0.0', resolve));
  deps.onStop(() => new Promise<void>((resolve) => server.close(() => resolve())), { last: true });
  return server;
}

export interface ConsumerSpec<T> {
  queue: string;
  contract: Contract<T>;
  handler: BatchHandler<T>;
}

/**
 * Pair a queue with its contract and handler (keeps the message type consistent). Throws at once,
 * naming infra/topology.ts, if the topology does not declare the queue.
 */
export const consume = <T>(queue: string, contract: Contract<T>, handler: BatchHandler<T>): ConsumerSpec<T> => {
  declaredQueue(queue);
  return { queue, contract, handler };
};

/**
 * Start consuming every queue; the process is ready when each has a consumer.
 * `ready` may add a readiness condition of the function's own.
 */
export async function runQueueFunction<C extends ConsumerConfig & { HEALTH_PORT: number }>(
  deps: Deps<C>,
  // `any`: each spec keeps its own message type, checked where `consume` pairs them.
  specs: ConsumerSpec<any>[],
  ready: () => boolean = () => true,
): Promise<Consumer[]> {
  const { config } = deps;
  const consumers: Consumer[] = [];
  // Every queue must be in the topology (consume() refused any other) and on the broker;
  // checked while MySQL answers max_allowed_packet.
  const queues = specs.map((s) => declaredQueue(s.queue));
  const [, batchMaxBytes] = await Promise.all([
    deps.amqp.attach((model) => checkQueues(model, queues.map((q) => q.name))),
    packetSafeBatchBytes(deps.pool, config.BATCH_MAX_BYTES),
  ]);
  // Registered first, so on shutdown it runs after the consumers stopped: nothing left to publish.
  deps.onStop(() => deps.publisher.flush());
  // Every queue's consumer at once (a channel each); `consumers` keeps the order of `specs`.
  consumers.push(...(await Promise.all(specs.map((spec) =>
    startConsumer(deps.amqp, {
      ...spec,
      publisher: deps.publisher,
      log: deps.log,
      metrics: deps.metrics,
      batchSize: config.BATCH_SIZE,
      batchWaitMs: config.BATCH_WAIT_MS,
      maxAttempts: config.MAX_ATTEMPTS,
      batchMaxBytes,
      prefetchMaxBytes: config.PREFETCH_MAX_BYTES,
      messageMaxBytes: config.MESSAGE_MAX_BYTES,
      probe: () => deps.pool.query('SELECT 1'),
    }),
  ))));
  deps.onStop(() => Promise.all(consumers.map((c) => c.stop())).then(() => undefined));
  const server = await serveHealth(deps, () => deps.amqp.connected && ready());
  deps.log.info(
    { queues: specs.map((s) => s.queue), health: (server.address() as AddressInfo).port, uptimeMs: Math.round(process.uptime() * 1000) },
    'ready',
  );
  return consumers;
}

/**
 * A batch's bodies may grow about threefold on the way to MySQL (binary values travel as hex in
 * the text protocol, plus the statement), so a batch holds at most a third of max_allowed_packet.
 */
async function packetSafeBatchBytes(pool: Pool, configured: number): Promise<number> {
  const [[row]] = (await pool.query('SELECT @@max_allowed_packet AS packet')) as [{ packet: number }[], unknown];
  return Math.max(1, Math.min(configured, Math.floor(Number(row?.packet ?? 4 * 1024 * 1024) / 3)));
}

export { consumerConfigShape };
