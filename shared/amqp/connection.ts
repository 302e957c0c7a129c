// One recovering AMQP connection per process (amqplib's built-in recovery).
// Parts of the process (publisher, consumers) register an `attach`
// hook; hooks run, in order, on every successful (re)connect, so channels and
// consumers are re-created after a broker restart.
import amqp, { type ChannelModel, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from '../log.ts';
import type { Topology } from '../../infra/topology.ts';
import { declareTopology } from './topology.ts';

export type AttachHook = (model: ChannelModel) => Promise<void>;

export interface AmqpClient {
  /** Run `hook` now (when connected) and after every reconnect. */
  attach(hook: AttachHook): Promise<void>;
  /** Close the channel model we are on and let recovery build a new one: the cure for a dead channel. */
  reset(reason: string): void;
  readonly connected: boolean;
  close(): Promise<void>;
}

export interface ConnectOptions {
  url: string;
  name: string;
  log: Logger;
  /** Declared on every (re)connect. Only for privileged connections (tests, tools): functions may not configure the broker. */
  topology?: Topology;
  /** Give up at boot after this many failed attempts (recovery after the first connect never gives up). */
  initialMaxRetries?: number;
}

export async function connectAmqp(opts: ConnectOptions): Promise<AmqpClient> {
  const { log } = opts;
  const { topology } = opts;
  const hooks: AttachHook[] = topology ? [(model) => withChannel(model, (ch) => declareTopology(ch, topology))] : [];
  let current: ChannelModel | null = null;
  let closing = false;

  const conn: RecoveringChannelModel = await amqp.connect(opts.url, {
    clientProperties: { connection_name: opts.name },
    recovery: {
      initialDelay: 250,
      maxDelay: 10_000,
      initialMaxRetries: opts.initialMaxRetries ?? 20,
      maxRetries: Infinity,
      waitForConnect: false,
      async setup(model: ChannelModel) {
        for (const hook of hooks) await hook(model);
        current = model;
      },
    },
  });
  conn.on('connect', () => log.info('amqp connected'));
  conn.on('disconnect', (err: Error) => {
    current = null;
    if (!closing) log.warn({ err: err.message }, 'amqp disconnected; recovering');
  });
  conn.on('reconnect-scheduled', ({ attempt, delay, error }: { attempt: number; delay: number; error: Error }) =>
    log.warn({ attempt, delay, err: error.message }, 'amqp reconnect scheduled'),
  );
  conn.on('reconnect-failed', (err: Error) => log.error({ err: err.message }, 'amqp recovery gave up'));
  conn.on('error', (err: Error) => log.warn({ err: err.message }, 'amqp connection error'));
  conn.on('blocked', (reason: string) => log.warn({ reason }, 'amqp connection blocked by broker'));
  await conn.waitForConnect();

  return {
    get connected() {
      return current !== null;
    },
    async attach(hook) {
      hooks.push(hook);
      if (current) await hook(current);
    },
    reset(reason) {
      const model = current;
      if (!model || closing) return;
      log.warn({ reason }, 'amqp resetting connection');
      current = null;
      model.close().catch(() => {});
    },
    async close() {
      closing = true;
      await conn.close();
    },
  };
}

/** Use a short-lived channel on `model`. */
export async function withChannel<T>(model: ChannelModel, fn: (ch: amqp.Channel) => Promise<T>): Promise<T> {
  const ch = await model.createChannel();
  try {
    return await fn(ch);
  } finally {
    await ch.close().catch(() => {});
  }
}
