// What the trigger's routes answer, as zod schemas. The OpenAPI document (GET /openapi.json) is
// generated from these and from the request schemas the routes validate with (app.ts, stats.ts,
// ev-runs.ts, dlq.ts); test/unit/trigger-openapi.test.ts checks every route's real answers
// against the document, so a schema here that stops matching a route fails a test.
import { z } from 'zod';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { STORED_REUSE_FACTOR } from './runs.ts';

/**
 * Route schemas here are zod, for the document: the handlers validate with them (their messages
 * name the field in our words), so Fastify's own validator and serializer pass data through.
 * Every route plugin calls this for its scope, so it also works registered on its own (tests).
 */
export function validatedByHandlers(app: Pick<FastifyInstance, 'setValidatorCompiler' | 'setSerializerCompiler'>): void {
  app.setValidatorCompiler(passThrough);
  app.setSerializerCompiler(() => serialize);
}

const passThrough = () => (data: unknown) => ({ value: data });

/**
 * The same, as Fastify's `schemaController.compilersFactory`: given these, Fastify never loads its
 * default compilers (ajv, fast-json-stringify), which the trigger's bundle leaves out (build.mjs).
 */
export const PASS_THROUGH_COMPILERS = { buildValidator: () => passThrough, buildSerializer: () => () => serialize } as unknown as
  NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>; // typed for ajv's compile functions, which these stand for

/** As Fastify answers without a schema; an error it throws (a malformed JSON body) as its own `{statusCode, code, error, message}`. */
function serialize(data: unknown): string {
  if (!(data instanceof Error)) return JSON.stringify(data);
  const e = data as Error & { statusCode?: number; code?: string; error?: string };
  return JSON.stringify({ statusCode: e.statusCode, code: e.code, error: e.error, message: e.message });
}

/** Every 4xx/5xx of ours, and Fastify's own (a malformed JSON body, an unsupported content type: those add `code`). */
export const ErrorSchema = z
  .object({
    statusCode: z.number().int(),
    error: z.string(),
    message: z.string().describe('What was wrong, naming the field, parameter or setting'),
    code: z.string().optional(),
  })
  .describe('An error: the message says what was wrong and, where it can, what to do');

/** Error responses of a route, each with the same shape and its own description. */
export function errors<const C extends number>(described: Record<C, string>): Record<C, z.ZodType> {
  const out = {} as Record<C, z.ZodType>;
  for (const [code, description] of Object.entries(described) as [string, string][]) out[Number(code) as C] = ErrorSchema.describe(description);
  return out;
}

/** Every route but /healthz and the docs answers 401 without the token. */
export const UNAUTHORIZED = 'Missing or wrong `Authorization: Bearer <TRIGGER_TOKEN>` header';

const CheckpointSchema = z
  .looseObject({
    item: z.number().int().describe('Messages before the first one the broker has not confirmed'),
    offset: z.number().int().describe('Byte offset in the file where that message starts'),
    follow: z.looseObject({}).optional().describe("A follow run's files and line numbering (functions/trigger/runs.ts FollowCheckpoint)"),
  })
  .describe('Where a resumed run starts again');

export const RunSchema = z.object({
  id: z.uuid(),
  kind: z.enum(['logs', 'ev']),
  state: z.enum(['running', 'stopping', 'done', 'failed', 'stopped']),
  source: z.string().nullable(),
  file: z.string().nullable().describe('The file (or, with params.glob, the glob) under LOG_DIR; null for an upload or an EV run'),
  params: z.record(z.string(), z.unknown()).nullable().describe("The run's request parameters (EV runs: everything needed to replay the same stream)"),
  lines: z.number().int(),
  published: z.number().int().describe('Messages the broker confirmed'),
  checkpoint: CheckpointSchema,
  error: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().nullable(),
  owner: z.string().nullable().optional().describe('The trigger process that drives the run (host:pid:random); null for a run from before owners'),
  epoch: z.number().int().optional().describe('Bumped each time a trigger claims the run from one that stopped reporting; only the current owner and epoch may write the run'),
});

export const RunWithStoredSchema = RunSchema.extend({
  stored: z.record(z.string(), z.number().int()).describe('Rows the consumers stored for the run, table by table'),
  storedAt: z
    .string()
    .describe(`When \`stored\` was counted. Counting reads every row of the run, so a count is reused for ${STORED_REUSE_FACTOR} times as long as it took (a few ms for a small run, seconds for a log of gigabytes)`),
  fileBytes: z
    .number()
    .int()
    .optional()
    .describe("A replay of one file: the file's size now. With checkpoint.offset (bytes confirmed) it tells how far the run is, and with checkpoint.item about how many lines it will publish"),
});

export const RunListSchema = z.object({ runs: z.array(RunSchema).describe('Newest first') });

export const UploadResultSchema = z.object({ id: z.uuid(), lines: z.number().int().describe('Lines the broker confirmed') });

export const HealthSchema = z.object({ ok: z.literal(true) });

export const RunIdParamsSchema = z.object({ id: z.uuid().describe('A run id') });
