// The trigger's HTTP API as a Fastify app. No env, no listen: index.ts wires it.
import { timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Registry } from 'prom-client';
import type { Logger } from '../../shared/log.ts';
import { describeIssues } from '../../shared/contracts/json.ts';
import { SourceSchema } from '../../shared/contracts/logs.ts';
import { publishFile, publishLines } from './log-runs.ts';
import { followRun } from './follow.ts';
import { FRAMINGS, framingFor, framingParams, type FramingSettings } from './framing.ts';
import type { Progress, Runner } from './runner.ts';
import type { Run, RunStore, StoredCounts } from './runs.ts';
import { statsRoutes, type StatsStore } from './stats.ts';
import { dashboardAuthorizes, dashboardRoutes, type DashboardDeps } from './dashboard.ts';
import { resolveLogFile, resolveLogGlob } from './paths.ts';
import { EvRunRequestSchema, RunRefusedError, type EvRuns } from './ev-runs.ts';
import { isPublicPath, registerOpenApi } from './openapi.ts';
import { dlqRoutes, type DeadLetters } from './dlq.ts';
import { HealthSchema, RunIdParamsSchema, RunListSchema, RunSchema, RunWithStoredSchema, PASS_THROUGH_COMPILERS, UNAUTHORIZED, UploadResultSchema, errors } from './api-schemas.ts';

export const DEFAULT_MAX_CONCURRENT_RUNS = 8;

export interface AppDeps {
  /** The streaming aggregates (kept by log-clean), behind GET /v1/stats and /v1/stats/top. */
  stats?: StatsStore;
  /** Lines longer than this are published cut to it, flagged with their real length (MAX_LINE_BYTES). */
  maxLineBytes?: number;
  /** The framing of runs that name none (LOG_FRAMING) and the limits of batch framing; unset: line framing. */
  framing?: FramingSettings;
  runs: RunStore;
  runner: Runner;
  ev: EvRuns;
  logDir: string;
  token: string;
  /** Largest body POST /v1/logs reads (BODY_LIMIT_MB); also Fastify's limit for JSON bodies. */
  bodyLimitBytes: number;
  /** Runs this trigger executes at once, uploads in progress included (MAX_CONCURRENT_RUNS); past it, 429. */
  maxConcurrentRuns?: number;
  /** Retry-After (seconds) of a 429. */
  retryAfterS?: number;
  log: Logger;
  /** Readiness: the broker connection is up. */
  ready: () => boolean;
  /** Prometheus registry served at /metrics (behind the token, like every route but /healthz). */
  metrics?: Registry;
  /** POST /v1/runs/:id/stop of a run another trigger executes: how long to wait for it to end before answering 202. */
  stopWaitMs?: number;
  /** Dead-letter operations as the sluice_dlq user (DLQ_AMQP_URL); without it, /v1/dlq answers 503 naming the setting. */
  dlq?: DeadLetters;
  /** The live dashboard at / and its event stream GET /v1/events (functions/trigger/dashboard.ts). */
  dashboard?: DashboardDeps;
}

const LogRunRequestSchema = z.strictObject({
  kind: z.literal('logs'),
  /** One file under LOG_DIR. */
  file: z.string().min(1, 'must not be empty').max(1024).optional(),
  /** A glob under LOG_DIR (`nginx/*.log`): every file it matches, each line carrying its file. */
  files: z.string().min(1, 'must not be empty').max(1024).optional(),
  /** Keep following the files (tail -F) until POST /v1/runs/:id/stop. */
  follow: z.boolean().optional(),
  source: SourceSchema.optional(),
  /** false: mute alerts for this run (the replay of an old log); every line carries the header `alerts: false`. */
  alerts: z.boolean().optional(),
  /** `line`: a message per line; `batch`: many consecutive lines per message (the trigger's LOG_FRAMING when absent). */
  framing: z.enum(FRAMINGS).optional(),
});
const RunRequestSchema = z.discriminatedUnion('kind', [LogRunRequestSchema, EvRunRequestSchema], {
  error: (issue) => (issue.code === 'invalid_union' ? 'kind must be "logs" or "ev"' : undefined),
});
const UploadQuerySchema = z.object({
  source: SourceSchema.default('upload'),
  alerts: z.enum(['true', 'false'], { error: 'must be true or false' }).transform((v) => v === 'true').default(true)
    .describe('false: mute alerts for this upload'),
  framing: z.enum(FRAMINGS).optional().describe("line: a message per line; batch: many consecutive lines per message (default: the trigger's LOG_FRAMING)"),
});
/** A log run's params: `alerts: false` when muted, `framing` when not line framing; null when neither. */
const logParams = (alerts: boolean | undefined, framing: { framing: 'line' | 'batch' }) => {
  const p = { ...alertsParams(alerts), ...framingParams(framing.framing) };
  return Object.keys(p).length ? p : null;
};
/** What a log run records of its alerts choice: `alerts: false` when muted, nothing otherwise (resumed runs read it back). */
const alertsParams = (alerts: boolean | undefined) => (alerts === false ? { alerts: false } : {});
const ListQuerySchema = z.object({ limit: z.coerce.number().int().min(1).max(500).default(50) });

const STATUS_TEXT = { 400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found', 409: 'Conflict', 413: 'Content Too Large', 429: 'Too Many Requests', 503: 'Service Unavailable' } as const;

function fail(reply: FastifyReply, statusCode: keyof typeof STATUS_TEXT, message: string) {
  return reply.code(statusCode).send({ statusCode, error: STATUS_TEXT[statusCode], message });
}

/** A request refused before its body was read: close the connection rather than read (and drop) the body. */
function hasUnreadBody(req: FastifyRequest): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

const fmt = (n: number) => n.toLocaleString('en-US');
const MIB = 1024 * 1024;
/** "67,108,864 bytes (BODY_LIMIT_MB=64)" */
const describeLimit = (bytes: number) => `${fmt(bytes)} bytes (BODY_LIMIT_MB=${Number((bytes / MIB).toPrecision(6))})`;

/**
 * An upload passed BODY_LIMIT_MB while streaming. Its message counts the lines the broker
 * confirmed, read when the message is (the runner records the reason once every confirm is in).
 */
export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
  constructor(limitBytes: number, runId: string, progress: Pick<Progress, 'published'>) {
    super();
    Object.defineProperty(this, 'message', {
      enumerable: false,
      configurable: true,
      get: () =>
        `request body is larger than the limit of ${describeLimit(limitBytes)}: reading stopped at the limit. ` +
        `The first ${fmt(progress.published)} lines were published before it and stay published; run ${runId} is failed with this reason. ` +
        `Upload the rest (from line ${fmt(progress.published + 1)}) separately, or raise BODY_LIMIT_MB.`,
    });
  }
}

/**
 * The request body as chunks, at most `limitBytes` of them: the chunk that passes the limit is
 * cut at it, and the next read throws `tooLarge()` instead of reading further. The stream is
 * left open (not destroyed), so the 413 still reaches the client.
 */
async function* limitedBody(body: Readable, limitBytes: number, tooLarge: () => Error): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of body.iterator({ destroyOnReturn: false })) {
    const buf: Buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    if (seen + buf.length > limitBytes) {
      if (limitBytes > seen) yield buf.subarray(0, limitBytes - seen);
      throw tooLarge();
    }
    seen += buf.length;
    yield buf;
  }
}

function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): { ok: true; data: z.infer<S> } | { ok: false; message: string } {
  const result = schema.safeParse(value);
  return result.success ? { ok: true, data: result.data } : { ok: false, message: `invalid ${where}: ${describeIssues(result.error)}` };
}

export function createApp(deps: AppDeps) {
  const app = Fastify({
    loggerInstance: deps.log,
    // JSON bodies (run requests) are small; uploads are streams with their own limit (BODY_LIMIT_MB).
    bodyLimit: 1024 * 1024,
    logController: new LogController({ disableRequestLogging: (req) => req.url === '/healthz' || req.url === '/metrics' }),
    // The handlers validate (api-schemas.ts): Fastify's ajv and fast-json-stringify are never built, nor loaded.
    schemaController: { compilersFactory: PASS_THROUGH_COMPILERS },
  });
  // Before any route: the document is made from the routes' schemas (GET /openapi.json, /docs).
  registerOpenApi(app);
  const expected = Buffer.from(`Bearer ${deps.token}`);
  const maxRuns = deps.maxConcurrentRuns ?? DEFAULT_MAX_CONCURRENT_RUNS;
  const retryAfterS = deps.retryAfterS ?? 5;
  // Requests admitted under the limit whose run is not in runner.active yet (being planned or recorded).
  let admitting = 0;

  // Uploaded logs are bytes, streamed to the broker as they arrive: the body is handed over as
  // the raw request stream (never buffered, never re-encoded); POST /v1/logs enforces BODY_LIMIT_MB.
  app.addContentTypeParser(['text/plain', 'application/octet-stream', 'application/x-ndjson'], (_req, payload, done) => done(null, payload));

  app.addHook('onRequest', async (req, reply) => {
    if (isPublicPath(req.url.split('?', 1)[0]!) || dashboardAuthorizes(req, deps.token)) return;
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      if (hasUnreadBody(req)) reply.header('connection', 'close');
      return fail(reply, 401, req.headers.authorization ? 'wrong bearer token' : 'missing Authorization: Bearer <TRIGGER_TOKEN> header');
    }
  });

  /**
   * Admits one more run under MAX_CONCURRENT_RUNS, or answers 429 and returns null. Call the
   * returned release() once the run is in runner.active (or was not started after all).
   */
  function admit(req: FastifyRequest, reply: FastifyReply): (() => void) | null {
    const busy = deps.runner.active + admitting;
    if (busy >= maxRuns) {
      if (hasUnreadBody(req)) reply.header('connection', 'close');
      reply.header('retry-after', String(retryAfterS));
      void fail(reply, 429, `too many runs: this trigger is executing ${busy} runs and its limit is ${maxRuns} (MAX_CONCURRENT_RUNS); retry in ${retryAfterS} s`);
      return null;
    }
    admitting++;
    let released = false;
    return () => {
      if (!released) (released = true), admitting--;
    };
  }

  app.get('/healthz', {
    schema: { tags: ['ops'], summary: 'Readiness: connected to RabbitMQ', security: [], response: { 200: HealthSchema, ...errors({ 503: 'Not connected to RabbitMQ' }) } },
  }, async (_req, reply) => (deps.ready() ? { ok: true } : fail(reply, 503, 'not connected to RabbitMQ')));
  app.get('/metrics', {
    schema: {
      tags: ['ops'],
      summary: 'Prometheus metrics',
      response: {
        200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: z.string() } } },
        ...errors({ 401: UNAUTHORIZED, 404: 'No metrics registry' }),
      },
    },
  }, async (_req, reply) => {
    if (!deps.metrics) return fail(reply, 404, 'no metrics registry');
    return reply.type(deps.metrics.contentType).send(await deps.metrics.metrics());
  });

  app.post('/v1/runs', {
    schema: {
      tags: ['runs'],
      summary: 'Start a log run (replay, glob, follow) or an EV simulation',
      body: RunRequestSchema,
      response: {
        202: RunSchema.describe('The run, started (Location: /v1/runs/:id)'),
        ...errors({
          400: 'A bad body (naming the field), a path outside LOG_DIR, or an EV run over MAX_RUN_MESSAGES',
          401: UNAUTHORIZED,
          404: 'The file is not in LOG_DIR',
          429: 'MAX_CONCURRENT_RUNS runs in progress (Retry-After)',
        }),
      },
    },
  }, async (req, reply) => {
    if (req.body instanceof Readable) {
      reply.header('connection', 'close'); // the body is not read
      return fail(reply, 400, 'body must be JSON (Content-Type: application/json); text bodies go to POST /v1/logs');
    }
    const body = parse(RunRequestSchema, req.body ?? {}, 'body');
    if (!body.ok) return fail(reply, 400, body.message);
    const request = body.data;
    if (request.kind === 'logs' && (request.file === undefined) === (request.files === undefined)) {
      return fail(reply, 400, request.file === undefined
        ? 'invalid body: file (one file under LOG_DIR) or files (a glob under LOG_DIR) is required'
        : 'invalid body: give either file or files, not both');
    }
    const release = admit(req, reply);
    if (!release) return reply;
    try {
      if (request.kind === 'ev') {
        const run = await deps.ev.start(request);
        return reply.code(202).header('location', `/v1/runs/${run.id}`).send(run);
      }
      const follow = request.follow ?? false;
      if (request.file !== undefined && !follow) {
        const file = await resolveLogFile(deps.logDir, request.file);
        if (!file.ok) return fail(reply, file.status, file.message);
        const source = request.source ?? file.defaultSource;
        const framing = framingFor(deps.framing, request.framing);
        const run = await deps.runs.create({ kind: 'logs', source, file: request.file, params: logParams(request.alerts, framing) });
        deps.runner.start(run, publishFile(run.id, source, file.path, undefined, deps.maxLineBytes, request.file, { alerts: request.alerts, framing }));
        return reply.code(202).header('location', `/v1/runs/${run.id}`).send(run);
      }
      // A followed file, or a glob (followed, or read once): functions/trigger/follow.ts.
      const glob = request.files !== undefined;
      const pattern = (request.files ?? request.file)!;
      const found = glob ? await resolveLogGlob(deps.logDir, pattern) : await resolveLogFile(deps.logDir, pattern);
      if (!found.ok) return fail(reply, found.status, found.message);
      const source = request.source ?? found.defaultSource;
      const framing = framingFor(deps.framing, request.framing);
      const run = await deps.runs.create({ kind: 'logs', source, file: pattern, params: { follow, glob, ...alertsParams(request.alerts), ...framingParams(framing.framing) } });
      deps.runner.start(run, followRun({ runId: run.id, source, logDir: deps.logDir, pattern, glob, follow, maxLineBytes: deps.maxLineBytes, log: deps.log, alerts: request.alerts, framing }));
      return reply.code(202).header('location', `/v1/runs/${run.id}`).send(run);
    } catch (err) {
      if (err instanceof RunRefusedError) return fail(reply, 400, err.message);
      throw err;
    } finally {
      release();
    }
  });

  app.post('/v1/logs', {
    schema: {
      tags: ['runs'],
      summary: 'Upload a log: newline-delimited text, streamed to the broker as it arrives',
      querystring: UploadQuerySchema,
      consumes: ['text/plain', 'application/octet-stream', 'application/x-ndjson'],
      body: z.string().describe('Log lines, each ending in a newline (the last may not), streamed'),
      response: {
        200: UploadResultSchema.describe('Every line was confirmed by the broker'),
        ...errors({
          400: 'A bad query parameter (naming it), or a body that is not text',
          401: UNAUTHORIZED,
          413: 'The body is larger than BODY_LIMIT_MB (the lines before the limit stay published; the message says how many)',
          429: 'MAX_CONCURRENT_RUNS runs in progress (Retry-After)',
        }),
      },
    },
  }, async (req, reply) => {
    const body = req.body;
    const refuse = (statusCode: 400 | 413, message: string) => {
      if (body instanceof Readable) reply.header('connection', 'close'); // the body is not read
      return fail(reply, statusCode, message);
    };
    const query = parse(UploadQuerySchema, req.query, 'query');
    if (!query.ok) return refuse(400, query.message);
    if (!(body instanceof Readable)) return fail(reply, 400, 'body must be newline-delimited text (Content-Type: text/plain)');
    const limit = deps.bodyLimitBytes;
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limit) {
      return refuse(413, `request body of ${fmt(declared)} bytes (Content-Length) is larger than the limit of ${describeLimit(limit)}; nothing was read or published`);
    }
    const release = admit(req, reply);
    if (!release) return reply;
    const { source, alerts } = query.data;
    const framing = framingFor(deps.framing, query.data.framing);
    let runId: string;
    let done: Promise<Progress>;
    try {
      const run = await deps.runs.create({ kind: 'logs', source, file: null, params: logParams(alerts, framing) });
      runId = run.id;
      // The request stream goes straight into the publisher: memory stays bounded by the
      // runner's window of unconfirmed messages, whatever the size of the upload.
      done = deps.runner.runNow(run, (out) => {
        const chunks = limitedBody(body, limit, () => new BodyTooLargeError(limit, run.id, out.progress));
        return publishLines(run.id, source, chunks, undefined, deps.maxLineBytes, undefined, { alerts, framing })(out);
      });
    } finally {
      release(); // runNow has put the run in runner.active (or it never started)
    }
    try {
      const progress = await done;
      return reply.code(200).send({ id: runId, lines: progress.published });
    } catch (err) {
      if (!(err instanceof BodyTooLargeError)) throw err;
      // Recorded failed by the runner with this same message; the rest of the body is not read.
      reply.header('connection', 'close');
      return fail(reply, 413, err.message);
    }
  });

  app.get('/v1/runs', {
    schema: {
      tags: ['runs'],
      summary: 'Recent runs, newest first',
      querystring: ListQuerySchema,
      response: { 200: RunListSchema, ...errors({ 400: 'A bad limit', 401: UNAUTHORIZED }) },
    },
  }, async (req, reply) => {
    const query = parse(ListQuerySchema, req.query, 'query');
    if (!query.ok) return fail(reply, 400, query.message);
    return { runs: await deps.runs.list(query.data.limit) };
  });

  app.post('/v1/runs/:id/stop', {
    schema: {
      tags: ['runs'],
      summary: 'Stop a running run (its checkpoint kept)',
      params: RunIdParamsSchema,
      response: {
        200: RunWithStoredSchema.describe('The run, stopped'),
        202: RunWithStoredSchema.describe('Another trigger executes the run and is still stopping it'),
        ...errors({ 400: 'Not a UUID', 401: UNAUTHORIZED, 404: 'No such run', 409: 'The run is not running, or is an upload' }),
      },
    },
  }, async (req, reply) => {
    const { id } = req.params as { id: string };
    if (!RunIdParamsSchema.shape.id.safeParse(id).success) return fail(reply, 400, `invalid run id '${id}': must be a UUID`);
    const run = await deps.runs.get(id);
    if (!run) return fail(reply, 404, `run ${id} not found`);
    const notRunning = (r: Run) => fail(reply, 409, `run ${id} is ${r.state}, not running: only a running run can be stopped`);
    if (run.state !== 'running' && run.state !== 'stopping') return notRunning(run);
    if (run.kind === 'logs' && run.file === null) return fail(reply, 409, `run ${id} is an upload: it ends with its request body and cannot be stopped (close the upload's connection instead)`);
    const here = deps.runner.stopRun(id);
    if (here) {
      await here.catch(() => {}); // its end (stopped, or failed) is in the run row
    } else {
      // Another trigger executes it: it sees the request at its next progress save (about a second).
      if (run.state === 'running' && !(await deps.runs.requestStop(id))) {
        const now = await deps.runs.get(id);
        if (now && now.state !== 'stopping') return notRunning(now);
      }
      const deadline = Date.now() + (deps.stopWaitMs ?? 5_000);
      while (Date.now() < deadline && (await deps.runs.get(id))?.state === 'stopping') await new Promise((r) => setTimeout(r, 100));
    }
    const ended = (await deps.runs.get(id))!;
    return reply.code(ended.state === 'stopping' ? 202 : 200).send({ ...ended, ...storedOf(await deps.runs.stored(ended)) });
  });

  app.get('/v1/runs/:id', {
    schema: {
      tags: ['runs'],
      summary: 'A run and the rows the consumers stored for it',
      params: RunIdParamsSchema,
      response: { 200: RunWithStoredSchema, ...errors({ 400: 'Not a UUID', 401: UNAUTHORIZED, 404: 'No such run' }) },
    },
  }, async (req, reply) => {
    const { id } = req.params as { id: string };
    if (!RunIdParamsSchema.shape.id.safeParse(id).success) return fail(reply, 400, `invalid run id '${id}': must be a UUID`);
    const run = await deps.runs.get(id);
    if (!run) return fail(reply, 404, `run ${id} not found`);
    return { ...run, ...storedOf(await deps.runs.stored(run)), ...(await fileBytesOf(deps.logDir, run)) };
  });

  if (deps.stats) void app.register(statsRoutes({ store: deps.stats }));
  void app.register(dlqRoutes({ dlq: deps.dlq }));
  void app.register(dashboardRoutes(deps));

  return app;
}

/** `{ fileBytes }` for a replay of one file (not a follow, a glob or an upload), when the file is still there. */
/** `stored` and `storedAt` of the API's run. */
const storedOf = ({ counts, countedAt }: StoredCounts) => ({ stored: counts, storedAt: countedAt.toISOString() });

async function fileBytesOf(logDir: string, run: Run): Promise<{ fileBytes?: number }> {
  if (run.kind !== 'logs' || !run.file || run.params?.follow === true || run.params?.glob === true) return {};
  return stat(path.resolve(logDir, run.file)).then((s) => (s.isFile() ? { fileBytes: s.size } : {}), () => ({}));
}
