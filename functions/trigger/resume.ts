// Runs outlive the trigger that started them: a run whose trigger stopped
// reporting progress is claimed by a live trigger and resumed from its
// checkpoint (the first message the broker had not confirmed). Messages between
// the checkpoint and the crash are published twice; the consumers' writes are
// keyed, so the rows come out exactly once. An upload cannot be resumed: its
// body was never stored, so the run is failed with a clear reason. A run asked
// to stop whose trigger is gone is ended `stopped`, with its last checkpoint.
// A claim bumps the run's epoch and makes this trigger its owner: the trigger
// that lost it (paused, cut off from MySQL) can no longer write to it, and stops
// publishing it at its next write (functions/trigger/runner.ts).
import type { Logger } from '../../shared/log.ts';
import { errorMessage } from '../../shared/errors.ts';
import { periodic } from '../../shared/timing.ts';
import type { EvRuns } from './ev-runs.ts';
import { followRun } from './follow.ts';
import { publishFile } from './log-runs.ts';
import { framingFor, framingOf, type FramingSettings } from './framing.ts';
import { resolveLogFile } from './paths.ts';
import type { Runner } from './runner.ts';
import type { LeasedRun, RunEnd, RunStore } from './runs.ts';

export interface ResumeDeps {
  runs: RunStore;
  runner: Runner;
  ev: EvRuns;
  logDir: string;
  log: Logger;
  staleAfterMs: number;
  maxLineBytes?: number;
  /** LOG_FRAMING and the batch limits; a resumed run keeps the framing it recorded. */
  framing?: FramingSettings;
  /** MAX_CONCURRENT_RUNS: a trigger at its limit leaves orphaned runs to another one. */
  maxConcurrentRuns?: number;
}

async function resumeOne(deps: ResumeDeps, run: LeasedRun): Promise<void> {
  // Ended under the lease this claim took: a no-op if another trigger claimed it since.
  const end = async (result: RunEnd) => void (await deps.runs.finish(run.id, result, run));
  const fail = (error: string) => end({ state: 'failed', lines: run.lines, published: run.published, error });
  if (run.state === 'stopping') return end({ state: 'stopped', lines: run.lines, published: run.published });
  if (run.kind === 'ev') return deps.ev.resume(run);
  if (run.file === null) return fail('interrupted: the trigger stopped during an upload, whose body is not kept; upload it again');
  const source = run.source ?? 'file';
  // The run's choice about alerts is in its params: a resumed run keeps it.
  const alerts = run.params?.alerts !== false;
  const framing = framingFor(deps.framing, framingOf(run.params));
  if (run.params?.follow === true || run.params?.glob === true) {
    // A followed file may be missing at its path for now (rotated): the follower looks for it.
    const work = followRun({
      runId: run.id, source, logDir: deps.logDir, pattern: run.file, glob: run.params.glob === true, follow: run.params.follow === true,
      from: run.checkpoint.follow, maxLineBytes: deps.maxLineBytes, log: deps.log, alerts, framing,
    });
    return deps.runner.start(run, work, run.checkpoint);
  }
  const file = await resolveLogFile(deps.logDir, run.file);
  if (!file.ok) return fail(`interrupted, and cannot resume: ${file.message}`);
  deps.runner.start(run, publishFile(run.id, run.source ?? file.defaultSource, file.path, run.checkpoint, deps.maxLineBytes, run.file, { alerts, framing }), run.checkpoint);
}

/** One look for orphaned runs; returns the ids resumed (or failed, when they cannot be). */
export async function resumeStaleRuns(deps: ResumeDeps): Promise<string[]> {
  const room = (deps.maxConcurrentRuns ?? Infinity) - deps.runner.active;
  // Not the runs this trigger executes itself (paused past the stale time, say): they are alive here.
  const claimed = await deps.runs.claimStale(deps.staleAfterMs, Math.min(100, room), deps.runner.executing());
  for (const run of claimed) {
    deps.log.warn({ runId: run.id, kind: run.kind, checkpoint: { item: run.checkpoint.item, offset: run.checkpoint.offset } }, 'resuming a run whose trigger stopped');
    await resumeOne(deps, run).catch((err) => deps.log.error({ runId: run.id, err: errorMessage(err) }, 'could not resume run'));
  }
  return claimed.map((r) => r.id);
}

/** Looks for orphaned runs now and every third of the stale time; stop() waits for a look in flight. */
export function startResumer(deps: ResumeDeps): { stop(): Promise<void> } {
  const loop = periodic(() => resumeStaleRuns(deps), { name: 'looking for orphaned runs', everyMs: Math.max(1_000, deps.staleAfterMs / 3), log: deps.log });
  return { stop: () => loop.stop() };
}
