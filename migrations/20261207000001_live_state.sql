-- A job is live while it can still run: scheduled, queued or running. The list is
-- written here once, for every query (`WHERE job_is_live(state)`). PostgreSQL inlines
-- this SQL function when it plans, so the condition becomes `state IN (...)` again and
-- still matches the partial indexes made with that list (jobs_live, jobs_flow_key_live).
CREATE FUNCTION job_is_live(state job_state) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT state IN ('scheduled', 'queued', 'running') $$;
