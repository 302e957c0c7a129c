// The query API over the streaming aggregates: GET /v1/stats and GET /v1/stats/top.
// Both answer from log_stats_minute and log_stats_top (written by log-clean as it
// stores the requests), never by scanning web_requests, so a day's query reads at most
// 1,440 rows per source.
import { z } from 'zod';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Pool } from '../../shared/db/pool.ts';
import { describeIssues } from '../../shared/contracts/json.ts';
import { SourceSchema } from '../../shared/contracts/logs.ts';
import { UNAUTHORIZED, errors, validatedByHandlers } from './api-schemas.ts';

export const DIMENSIONS = ['path', 'not_found', 'referrer', 'client_ip', 'user_agent'] as const;
export type Dimension = (typeof DIMENSIONS)[number];
export type Bucket = 'minute' | 'hour' | 'day';

export interface StatusCounts { '1xx': number; '2xx': number; '3xx': number; '4xx': number; '5xx': number }
export interface Point { t: string; requests: number; bytes: number; visitors: number; status: StatusCounts }
export interface TopItem { value: string; requests: number; visitors: number; bytes: number }

export interface StatsQuery { source?: string; from: Date; to: Date; bucket: Bucket }
export interface TopQuery { source?: string; dimension: Dimension; from: Date; to: Date; limit: number }

/** The store port: answers from the aggregates. */
export interface StatsStore {
  series(q: StatsQuery): Promise<Point[]>;
  top(q: TopQuery): Promise<TopItem[]>;
}

/** At most this many points in one series (a week of minutes). */
export const MAX_POINTS = 10_080;
const BUCKET_MS: Record<Bucket, number> = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
const isoInstant = z.iso.datetime({ offset: true }).transform((s) => new Date(s));

const RangeShape = {
  source: SourceSchema.optional(),
  from: isoInstant.optional(),
  to: isoInstant.optional(),
};
export const StatsQuerySchema = z.strictObject({ ...RangeShape, bucket: z.enum(['minute', 'hour', 'day']).default('minute') });
export const TopQuerySchema = z.strictObject({
  ...RangeShape,
  dimension: z.enum(DIMENSIONS),
  limit: z.coerce.number().int().min(1).max(1000).default(10),
});

const StatusCountsSchema = z.object({ '1xx': z.number().int(), '2xx': z.number().int(), '3xx': z.number().int(), '4xx': z.number().int(), '5xx': z.number().int() });
const TotalsSchema = z.object({ requests: z.number().int(), bytes: z.number().int(), visitors: z.number().int(), status: StatusCountsSchema });
const RangeAnswer = {
  source: z.string().nullable().describe('null: every source'),
  from: z.string().describe('ISO 8601, UTC'),
  to: z.string().describe('ISO 8601, UTC (excluded)'),
};
export const StatsAnswerSchema = z.object({
  ...RangeAnswer,
  bucket: z.enum(['minute', 'hour', 'day']),
  totals: TotalsSchema,
  series: z.array(TotalsSchema.extend({ t: z.string().describe('Start of the bucket, ISO 8601 UTC') })).describe('Buckets with requests only, in time order'),
});
export const TopAnswerSchema = z.object({
  ...RangeAnswer,
  dimension: z.enum(DIMENSIONS),
  items: z.array(z.object({ value: z.string(), requests: z.number().int(), visitors: z.number().int(), bytes: z.number().int() })).describe('By requests, summed over the days the range touches'),
});

/** from/to default to the last hour; from must come before to. */
function range(q: { from?: Date; to?: Date }, now: Date): { from: Date; to: Date } | string {
  const to = q.to ?? now;
  const from = q.from ?? new Date(to.getTime() - 3_600_000);
  return from < to ? { from, to } : `from (${from.toISOString()}) must be before to (${to.toISOString()})`;
}

const zero = (): StatusCounts => ({ '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 });

export function totalsOf(series: Point[]): Omit<Point, 't'> {
  const t = { requests: 0, bytes: 0, visitors: 0, status: zero() };
  for (const p of series) {
    t.requests += p.requests;
    t.bytes += p.bytes;
    t.visitors += p.visitors;
    for (const k of Object.keys(t.status) as (keyof StatusCounts)[]) t.status[k] += p.status[k];
  }
  return t;
}

function fail(reply: FastifyReply, message: string) {
  return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message });
}

/** The two routes, as a Fastify plugin (the app registers it behind its bearer token). */
export const statsRoutes = (deps: { store: StatsStore; now?: () => Date }): FastifyPluginAsync => async (app) => {
  const now = deps.now ?? (() => new Date());
  validatedByHandlers(app);

  app.get('/v1/stats', {
    schema: {
      tags: ['stats'],
      summary: 'Requests, bytes, visitors and status classes over time, from the aggregates',
      querystring: StatsQuerySchema,
      response: { 200: StatsAnswerSchema, ...errors({ 400: 'A bad parameter (naming it), from not before to, or more than 10,080 points', 401: UNAUTHORIZED }) },
    },
  }, async (req, reply) => {
    const parsed = StatsQuerySchema.safeParse(req.query);
    if (!parsed.success) return fail(reply, `invalid query: ${describeIssues(parsed.error)}`);
    const q = parsed.data;
    const r = range(q, now());
    if (typeof r === 'string') return fail(reply, r);
    const points = Math.ceil((r.to.getTime() - r.from.getTime()) / BUCKET_MS[q.bucket]);
    if (points > MAX_POINTS) return fail(reply, `from..to holds ${points.toLocaleString('en')} ${q.bucket}s; at most ${MAX_POINTS.toLocaleString('en')} points: use a larger bucket (hour or day) or a shorter range`);
    const series = await deps.store.series({ source: q.source, from: r.from, to: r.to, bucket: q.bucket });
    return { source: q.source ?? null, from: r.from.toISOString(), to: r.to.toISOString(), bucket: q.bucket, totals: totalsOf(series), series };
  });

  app.get('/v1/stats/top', {
    schema: {
      tags: ['stats'],
      summary: 'Top paths, 404s, referrers, clients or user agents',
      querystring: TopQuerySchema,
      response: { 200: TopAnswerSchema, ...errors({ 400: 'A bad parameter (naming it), or from not before to', 401: UNAUTHORIZED }) },
    },
  }, async (req, reply) => {
    const parsed = TopQuerySchema.safeParse(req.query);
    if (!parsed.success) return fail(reply, `invalid query: ${describeIssues(parsed.error)}`);
    const q = parsed.data;
    const r = range(q, now());
    if (typeof r === 'string') return fail(reply, r);
    const items = await deps.store.top({ source: q.source, dimension: q.dimension, from: r.from, to: r.to, limit: q.limit });
    return { source: q.source ?? null, dimension: q.dimension, from: r.from.toISOString(), to: r.to.toISOString(), items };
  });
};

const BUCKET_SQL: Record<Bucket, string> = {
  minute: 'minute',
  hour: "DATE_FORMAT(minute, '%Y-%m-%d %H:00:00')",
  day: "DATE_FORMAT(minute, '%Y-%m-%d 00:00:00')",
};

interface SeriesRow { t: Date | string; requests: string; bytes: string; visitors: string; s1: string; s2: string; s3: string; s4: string; s5: string }
interface TopRow { value: string; requests: string; visitors: string; bytes: string }

/** Reads the aggregates. `top` sums the per-day rows of the dates the range touches. */
export function createStatsStore(pool: Pool): StatsStore {
  const toIso = (t: Date | string) => (t instanceof Date ? t : new Date(`${t.replace(' ', 'T')}Z`)).toISOString();
  return {
    async series({ source, from, to, bucket }) {
      const [rows] = (await pool.query(
        `SELECT ${BUCKET_SQL[bucket]} AS t, SUM(requests) AS requests, SUM(bytes) AS bytes, SUM(visitors) AS visitors,
                SUM(s1xx) AS s1, SUM(s2xx) AS s2, SUM(s3xx) AS s3, SUM(s4xx) AS s4, SUM(s5xx) AS s5
         FROM log_stats_minute WHERE minute >= ? AND minute < ?${source ? ' AND source = ?' : ''}
         GROUP BY t ORDER BY t`,
        source ? [from, to, source] : [from, to],
      )) as [SeriesRow[], unknown];
      return rows.map((r) => ({
        t: toIso(r.t),
        requests: Number(r.requests),
        bytes: Number(r.bytes),
        visitors: Number(r.visitors),
        status: { '1xx': Number(r.s1), '2xx': Number(r.s2), '3xx': Number(r.s3), '4xx': Number(r.s4), '5xx': Number(r.s5) },
      }));
    },
    async top({ source, dimension, from, to, limit }) {
      // Top tables are kept per day (the log's own day, as GoAccess counts visitors): a range
      // takes every day whose date it touches, so its granularity is a day.
      const firstDay = from.toISOString().slice(0, 10);
      const lastDay = new Date(to.getTime() - 1).toISOString().slice(0, 10);
      if (source && firstDay === lastDay) {
        // One source, one day: one row per value already, read in index order (no grouping, no sort).
        const [rows] = (await pool.query(
          `SELECT value, requests, visitors, bytes FROM log_stats_top
           WHERE source = ? AND day = ? AND dimension = ? ORDER BY requests DESC LIMIT ?`,
          [source, firstDay, dimension, limit],
        )) as [TopRow[], unknown];
        return rows.map((r) => ({ value: r.value, requests: Number(r.requests), visitors: Number(r.visitors), bytes: Number(r.bytes) }));
      }
      const [rows] = (await pool.query(
        `SELECT MIN(value) AS value, SUM(requests) AS requests, SUM(visitors) AS visitors, SUM(bytes) AS bytes
         FROM log_stats_top WHERE dimension = ? AND day BETWEEN ? AND ?${source ? ' AND source = ?' : ''}
         GROUP BY value_hash ORDER BY requests DESC, value LIMIT ?`,
        source ? [dimension, firstDay, lastDay, source, limit] : [dimension, firstDay, lastDay, limit],
      )) as [TopRow[], unknown];
      return rows.map((r) => ({ value: r.value, requests: Number(r.requests), visitors: Number(r.visitors), bytes: Number(r.bytes) }));
    },
  };
}
