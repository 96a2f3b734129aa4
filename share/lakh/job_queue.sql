-- lakh::pg::job_queue, schema version 1: the table job_queue::create_schema() makes, for
-- teams that apply their own migrations (Flyway, sqitch, goose, psql -f ...). The table is
-- lakh_jobs in the current schema; for another name, replace "lakh_jobs" throughout (an
-- index's name is the table's, unqualified, with a suffix) and pass the same name in
-- job_queue_options::table. Idempotent.
--
-- The application role needs (docs/job_queue.md, "Privileges"):
--   GRANT USAGE ON SCHEMA <schema> TO app;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON lakh_jobs TO app;
--   GRANT USAGE, SELECT ON SEQUENCE lakh_jobs_id_seq, lakh_jobs_token_seq TO app;
CREATE SEQUENCE IF NOT EXISTS lakh_jobs_token_seq;
CREATE TABLE IF NOT EXISTS lakh_jobs (
  id bigserial PRIMARY KEY,
  queue text NOT NULL,
  payload text NOT NULL,
  unique_key text,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'dead')),
  attempts integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL CHECK (max_attempts >= 1),
  run_at timestamptz NOT NULL DEFAULT now(),
  lease_until timestamptz,
  token bigint,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz);
CREATE INDEX IF NOT EXISTS lakh_jobs_runnable ON lakh_jobs (queue, run_at, id)
  WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS lakh_jobs_running ON lakh_jobs (lease_until) WHERE state = 'running';
CREATE UNIQUE INDEX IF NOT EXISTS lakh_jobs_unique ON lakh_jobs (queue, unique_key)
  WHERE unique_key IS NOT NULL AND state IN ('pending', 'running');
