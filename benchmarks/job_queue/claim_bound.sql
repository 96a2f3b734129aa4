-- The bare SQL bound for scripts/bench-job-queue: the same claim (SKIP LOCKED batch of
-- :batch) and completion as lakh::pg::job_queue, without leases, tokens or attempts.
BEGIN;
WITH next AS (SELECT id FROM bench_jobs WHERE queue = 'bench' AND state = 'pending'
              ORDER BY run_at, id LIMIT :batch FOR UPDATE SKIP LOCKED)
UPDATE bench_jobs j SET state = 'done' WHERE j.id = ANY(ARRAY(SELECT id FROM next));
COMMIT;
