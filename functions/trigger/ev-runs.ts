// EV runs: plan the sessions, record the injected faults (the truth the
// analytics is scored against; it never travels in the messages), then stream
// readings and clock ticks, paced to `speed` simulated seconds per real second.
import { z } from 'zod';
import type { Pool } from '../../shared/db/pool.ts';
import type { Catalog } from './ev-catalog.ts';
import type { Pause, RunCount, SessionPlan, SimOptions } from './ev-simulator.ts';
import type { Position, Runner } from './runner.ts';
import type { LeasedRun, Run, RunStore } from './runs.ts';

// The simulator and faker's English data it draws identities from (~450 KiB of the bundle) are
// evaluated with the first EV run, not at start (esbuild keeps the module in the bundle, lazily).
const loadSimulator = () => import('./ev-simulator.ts');

export const EvRunRequestSchema = z.strictObject({
  kind: z.literal('ev'),
  sessions: z.number().int().min(1).max(100_000),
  seed: z.number().int().min(0).max(2 ** 32 - 1).optional(),
  /** Simulated seconds per real second: 3600 plays a one-hour session in one second. */
  speed: z.number().positive().max(1e9).default(3600),
  sampleIntervalS: z.number().int().min(1).max(3600).default(30),
  faultRate: z.number().min(0).max(1).default(0),
  /** Simulated start time; the real time of the request by default. */
  startTime: z.iso.datetime({ offset: true }).optional(),
});
export type EvRunRequest = z.infer<typeof EvRunRequestSchema>;

export interface EvRuns {
  /** Plan and start a run; rejects with a RunRefusedError (a 400) when the run is too large. */
  start(request: EvRunRequest): Promise<Run>;
  /** Continue a run whose trigger died, from its checkpoint (the same seed replays the same stream). */
  resume(run: LeasedRun): void | Promise<void>;
}

/** The request is valid but asks for more than this trigger allows; the message says what and by how much. */
export class RunRefusedError extends Error {
  override name = 'RunRefusedError';
  readonly statusCode = 400;
}

export const DEFAULT_MAX_RUN_MESSAGES = 5_000_000;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/** "this run would publish 123,456,789 messages (sessions 100000 x about 1,234 readings at sampleIntervalS 1, ...)" */
export function tooManyMessages(request: Pick<EvRunRequest, 'sessions' | 'sampleIntervalS'>, count: RunCount, limit: number): string {
  const perSession = count.readings / request.sessions;
  const fit = Math.floor(limit / (count.messages / request.sessions));
  const advice =
    fit >= 1
      ? `ask for about ${fmt(fit)} session${fit === 1 ? '' : 's'} or fewer, or a longer sampleIntervalS`
      : `even one session is too many at sampleIntervalS ${request.sampleIntervalS}; use a longer sampleIntervalS`;
  return (
    `this run would publish ${count.exact ? '' : 'about '}${fmt(count.messages)} messages ` +
    `(sessions ${request.sessions} x about ${fmt(perSession)} readings at sampleIntervalS ${request.sampleIntervalS}, plus ${fmt(count.clocks)} clock ticks and ${fmt(count.quiet)} quiet notices); ` +
    `the limit is ${fmt(limit)} (MAX_RUN_MESSAGES): ${advice}`
  );
}

export function createEvRuns(deps: {
  runs: RunStore;
  runner: Runner;
  pool: Pool;
  catalog: Catalog;
  /** Largest number of messages (readings + clock ticks) one run may publish. */
  maxRunMessages?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Hands the event loop back between slices of planning and counting (setImmediate by default). */
  pause?: Pause;
}): EvRuns {
  const now = deps.now ?? (() => performance.now());
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const maxRunMessages = deps.maxRunMessages ?? DEFAULT_MAX_RUN_MESSAGES;
  const slices = deps.pause ? { pause: deps.pause } : {};

  function optionsOf(run: Run): { opts: SimOptions; speed: number } {
    // `quietNotices`: recorded by triggers that send them; a run recorded before keeps its old stream.
    const p = EvRunRequestSchema.extend({ seed: z.number().int(), startTime: z.iso.datetime({ offset: true }), quietNotices: z.boolean().default(false) }).parse(run.params);
    return {
      opts: {
        runId: run.id, sessions: p.sessions, seed: p.seed, sampleIntervalS: p.sampleIntervalS, faultRate: p.faultRate, startTime: new Date(p.startTime),
        catalog: deps.catalog, announceQuiet: p.quietNotices,
      },
      speed: p.speed,
    };
  }

  function launch(run: LeasedRun, opts: SimOptions, speed: number, plans: SessionPlan[], from?: Position): void {
    const skip = from?.item ?? 0;
    deps.runner.start(
      run,
      async (out) => {
        const { simItemMessage, simItemTime, simulateRun } = await loadSimulator();
        let wallStart = 0;
        let simStart: number | null = null;
        let item = -1;
        for (const next of simulateRun(opts, plans)) {
          if (++item < skip) continue; // published before the trigger that ran it died
          const simMs = simItemTime(next);
          if (simStart === null) (simStart = simMs), (wallStart = now());
          // Pacing: simulated time runs `speed` times faster than real time.
          const ahead = (simMs - simStart) / speed - (now() - wallStart);
          if (ahead > 5) await sleep(ahead);
          const position = { item, offset: 0 };
          // A reading carries the time it was sent (ev-store keeps it to measure end-to-end lag).
          const m = simItemMessage(next);
          await out.publish(m.exchange, m.routingKey, m.content, m.options, position);
        }
      },
      from,
    );
  }

  return {
    async start(request) {
      const { countRunMessages, planRunSliced } = await loadSimulator();
      const seed = request.seed ?? Math.floor(Math.random() * 2 ** 32);
      const startTime = request.startTime ?? new Date().toISOString();
      // Refused before anything is recorded: count what the run would publish (the plans'
      // numbers and each session's physics, in slices that leave the event loop free).
      const count = await countRunMessages(
        { runId: 'count', sessions: request.sessions, seed, sampleIntervalS: request.sampleIntervalS, faultRate: request.faultRate, startTime: new Date(startTime), catalog: deps.catalog },
        { limit: maxRunMessages, ...slices },
      );
      if (count.messages > maxRunMessages) throw new RunRefusedError(tooManyMessages(request, count, maxRunMessages));
      // Everything needed to replay the same stream is kept with the run.
      const run = await deps.runs.create({ kind: 'ev', source: 'simulator', params: { ...request, seed, startTime, quietNotices: true } });
      const { opts, speed } = optionsOf(run);
      const plans = await planRunSliced(opts, slices);
      const truth = plans.filter((p) => p.fault !== null).map((p) => [run.id, p.sessionId, p.fault]);
      for (let i = 0; i < truth.length; i += 1_000) {
        await deps.pool.query('INSERT IGNORE INTO ev_sim_truth (run_id, session_id, fault) VALUES ?', [truth.slice(i, i + 1_000)]);
      }
      launch(run, opts, speed, plans);
      return run;
    },
    async resume(run) {
      const { planRunSliced } = await loadSimulator();
      const { opts, speed } = optionsOf(run);
      launch(run, opts, speed, await planRunSliced(opts, slices), run.checkpoint);
    },
  };
}
