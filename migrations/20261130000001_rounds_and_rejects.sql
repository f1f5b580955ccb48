-- Issue 10: one "effective state" rule, rounds of attempts, and history PostgreSQL
-- refuses for good.

-- 1. A scheduled job whose time has come is queued, even before a worker's promotion
--    reaches PostgreSQL. Every read states it through this one function (the planner
--    inlines it).
CREATE FUNCTION job_effective_state(state job_state, run_at timestamptz) RETURNS job_state
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN state = 'scheduled' AND run_at <= now() THEN 'queued'::job_state ELSE state END $$;

-- 2. A retry of a dead or cancelled job starts a new round of attempts (1, 2, 3 again);
--    each execution says which round it belongs to, so the rounds read apart.
ALTER TABLE jobs ADD COLUMN round integer NOT NULL DEFAULT 1 CHECK (round >= 1);
ALTER TABLE job_executions ADD COLUMN round integer NOT NULL DEFAULT 1 CHECK (round >= 1);

-- 3. A history record or job change that PostgreSQL refuses for good (a CHECK it
--    breaks) is kept here with the reason instead of blocking the records behind it.
CREATE TABLE history_rejects (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('start', 'record', 'update')),
    payload     json        NOT NULL,
    error       text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
