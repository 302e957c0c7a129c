-- Runs have an owner and a lease (issue 10, "Fence every writer").
-- owner: the trigger process driving the run (host:pid:random, see
-- functions/trigger/runs.ts ownerId); epoch: bumped by every claim of a stale
-- run. Progress, checkpoint and finish updates are conditional on (id, owner,
-- epoch): a trigger that lost its run to a claim writes nothing more and stops
-- publishing it. Runs recorded before this migration have no owner (NULL) and
-- epoch 0 until a trigger claims them.
ALTER TABLE runs ADD COLUMN owner VARCHAR(128) NULL, ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
