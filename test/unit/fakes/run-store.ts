// An in-memory RunStore for the trigger's unit tests: records what was created and finished.
import type { Run, RunEnd, RunStore } from '../../../functions/trigger/runs.ts';

export type Finished = RunEnd;

export function fakeRuns(stored: Record<string, number> = {}): RunStore & { created: Run[]; finished: Map<string, Finished> } {
  const created: Run[] = [];
  const finished = new Map<string, Finished>();
  return {
    created,
    finished,
    async create({ kind, source = null, file = null, params = null }) {
      const run: Run = { id: `00000000-0000-4000-8000-${String(created.length).padStart(12, '0')}`, kind, state: 'running', source, file, params, lines: 0, published: 0, checkpoint: { item: 0, offset: 0 }, error: null, createdAt: '', updatedAt: '', finishedAt: null };
      created.push(run);
      return run;
    },
    async get(id) {
      return created.find((r) => r.id === id) ?? null;
    },
    async list(limit) {
      return created.slice(0, limit);
    },
    async progress() {
      return true;
    },
    async requestStop() {
      return false;
    },
    async claimStale() {
      return [];
    },
    async finish(id, result) {
      finished.set(id, result);
    },
    async stored() {
      return stored;
    },
  };
}
