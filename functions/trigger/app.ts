// The trigger's HTTP API as a Fastify app. No env, no listen: index.ts wires it.
import { timingSafeEqual } from 'node:crypto';
import Fastify, { LogController, type FastifyReply } from 'fastify';
import { z } from 'zod';
import type { Registry } from 'prom-client';
import type { Logger } from '../../shared/log.ts';
import { describeIssues } from '../../shared/contracts/json.ts';
import { SourceSchema } from '../../shared/contracts/logs.ts';
import { publishFile, publishLines } from './log-runs.ts';
import type { Runner } from './runner.ts';
import type { RunStore } from './runs.ts';
import { resolveLogFile } from './paths.ts';
import { EvRunRequestSchema, type EvRuns } from './ev-runs.ts';

export interface AppDeps {
  runs: RunStore;
  runner: Runner;
  ev: EvRuns;
  logDir: string;
  token: string;
  bodyLimitBytes: number;
  log: Logger;
  /** Readiness: the broker connection is up. */
  ready: () => boolean;
  /** Prometheus registry served at /metrics (no token, like /healthz). */
  metrics?: Registry;
}

const LogRunRequestSchema = z.strictObject({
  kind: z.literal('logs'),
  file: z.string().min(1, 'must not be empty').max(1024),
  source: SourceSchema.optional(),
});
const RunRequestSchema = z.discriminatedUnion('kind', [LogRunRequestSchema, EvRunRequestSchema], {
  error: (issue) => (issue.code === 'invalid_union' ? 'kind must be "logs" or "ev"' : undefined),
});
const UploadQuerySchema = z.object({ source: SourceSchema.default('upload') });
const ListQuerySchema = z.object({ limit: z.coerce.number().int().min(1).max(500).default(50) });

function fail(reply: FastifyReply, statusCode: 400 | 401 | 404 | 503, message: string) {
  const error = { 400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found', 503: 'Service Unavailable' }[statusCode];
  return reply.code(statusCode).send({ statusCode, error, message });
}

function parse<S extends z.ZodType>(schema: S, value: unknown, where: string): { ok: true; data: z.infer<S> } | { ok: false; message: string } {
  const result = schema.safeParse(value);
  return result.success ? { ok: true, data: result.data } : { ok: false, message: `invalid ${where}: ${describeIssues(result.error)}` };
}

export function createApp(deps: AppDeps) {
  const app = Fastify({
    loggerInstance: deps.log,
    bodyLimit: deps.bodyLimitBytes,
    logController: new LogController({ disableRequestLogging: (req) => req.url === '/healthz' || req.url === '/metrics' }),
  });
  const expected = Buffer.from(`Bearer ${deps.token}`);

  // Uploaded logs are bytes: keep them as a Buffer, never re-encode them.
  app.addContentTypeParser(['text/plain', 'application/octet-stream', 'application/x-ndjson'], { parseAs: 'buffer' }, (_req, body, done) =>
    done(null, body),
  );

  app.addHook('onRequest', async (req, reply) => {
    if (req.url === '/healthz' || req.url === '/metrics') return;
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return fail(reply, 401, req.headers.authorization ? 'wrong bearer token' : 'missing Authorization: Bearer <TRIGGER_TOKEN> header');
    }
  });

  app.get('/healthz', async (_req, reply) => (deps.ready() ? { ok: true } : fail(reply, 503, 'not connected to RabbitMQ')));
  app.get('/metrics', async (_req, reply) => {
    if (!deps.metrics) return fail(reply, 404, 'no metrics registry');
    return reply.type(deps.metrics.contentType).send(await deps.metrics.metrics());
  });

  app.post('/v1/runs', async (req, reply) => {
    const body = parse(RunRequestSchema, req.body ?? {}, 'body');
    if (!body.ok) return fail(reply, 400, body.message);
    const request = body.data;
    if (request.kind === 'ev') {
      const run = await deps.ev.start(request);
      return reply.code(202).send(run);
    }
    const file = await resolveLogFile(deps.logDir, request.file);
    if (!file.ok) return fail(reply, file.status, file.message);
    const source = request.source ?? file.defaultSource;
    const run = await deps.runs.create({ kind: 'logs', source, file: request.file });
    deps.runner.start(run.id, publishFile(run.id, source, file.path));
    return reply.code(202).header('location', `/v1/runs/${run.id}`).send(run);
  });

  app.post('/v1/logs', async (req, reply) => {
    const query = parse(UploadQuerySchema, req.query, 'query');
    if (!query.ok) return fail(reply, 400, query.message);
    if (!Buffer.isBuffer(req.body)) return fail(reply, 400, 'body must be newline-delimited text (Content-Type: text/plain)');
    const { source } = query.data;
    const run = await deps.runs.create({ kind: 'logs', source, file: null });
    const progress = await deps.runner.runNow(run.id, publishLines(run.id, source, [req.body]));
    return reply.code(200).send({ id: run.id, lines: progress.published });
  });

  app.get('/v1/runs', async (req, reply) => {
    const query = parse(ListQuerySchema, req.query, 'query');
    if (!query.ok) return fail(reply, 400, query.message);
    return { runs: await deps.runs.list(query.data.limit) };
  });

  app.get('/v1/runs/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    if (!z.uuid().safeParse(id).success) return fail(reply, 400, `invalid run id '${id}': must be a UUID`);
    const run = await deps.runs.get(id);
    if (!run) return fail(reply, 404, `run ${id} not found`);
    return { ...run, stored: await deps.runs.stored(run) };
  });

  return app;
}
