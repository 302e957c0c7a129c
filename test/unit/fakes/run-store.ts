// An in-memory RunStore for the trigger's unit tests: records what was created and finished.
// Fenced like the real store: progress and finish of a run it holds write nothing (false) unless
// the lease given is the run's (owner, epoch); takeOver() is another trigger's claim. Runs it
// does not hold (tests that drive the runner with an id of their own) are not fenced.
import type { LeasedRun, Lease, RunEnd, RunRef, RunStore } from '../../../functions/trigger/runs.ts';

export type Finished = RunEnd;

/** The owner of the runs the fake creates. */
export const FAKE_OWNER = 'fake-trigger';

/** A lease for a run the fake does not hold (an id of the test's own). */
export const fakeRef = (id: string): RunRef => ({ id, owner: FAKE_OWNER, epoch: 1 });

export function fakeRuns(stored: Record<string, number> = {}): RunStore & {
  created: LeasedRun[];
  finished: Map<string, Finished>;
  /** Another trigger claims the run: new owner, epoch + 1; returns its lease. */
  takeOver(id: string, owner?: string): RunRef;
} {
  const created: LeasedRun[] = [];
  const finished = new Map<string, Finished>();
  /** The run is held and `lease` is not its lease: a write under it matches nothing. */
  const fenced = (id: string, lease: Lease) => {
    const run = created.find((r) => r.id === id);
    return run !== undefined && (run.owner !== lease.owner || run.epoch !== lease.epoch);
  };
  return {
    created,
    finished,
    takeOver(id, owner = 'other-trigger') {
      const run = created.find((r) => r.id === id)!;
      run.owner = owner;
      run.epoch++;
      return { id, owner, epoch: run.epoch };
    },
    async create({ kind, source = null, file = null, params = null }) {
      const run: LeasedRun = { id: `00000000-0000-4000-8000-${String(created.length).padStart(12, '0')}`, kind, state: 'running', source, file, params, lines: 0, published: 0, checkpoint: { item: 0, offset: 0 }, error: null, createdAt: '', updatedAt: '', finishedAt: null, owner: FAKE_OWNER, epoch: 1 };
      created.push(run);
      return run;
    },
    async get(id) {
      return created.find((r) => r.id === id) ?? null;
    },
    async list(limit) {
      return created.slice(0, limit);
    },
    async progress(id, _lines, _published, _checkpoint, lease) {
      return !fenced(id, lease);
    },
    async requestStop() {
      return false;
    },
    async claimStale() {
      return [];
    },
    async finish(id, result, lease) {
      if (fenced(id, lease)) return false;
      finished.set(id, result);
      return true;
    },
    async stored() {
      return { counts: stored, countedAt: new Date() };
    },
  };
}
