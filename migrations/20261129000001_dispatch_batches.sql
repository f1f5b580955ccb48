-- The dispatch outbox takes one row per committed batch of jobs instead of one per job
-- (issue 4). Measured on the 2-core benchmark machine, for 1,000 jobs inserted in one
-- statement: 11.8 ms for the jobs, 2.5 ms more for their job_dispatch rows and 2.9 ms to
-- delete them once the jobs were in Redis; one row holding the 1,000 ids costs neither.
-- A batch row still here after the dispatcher's grace is spread into job_dispatch rows,
-- which the dispatcher handles as before (retries of dead jobs also write those).
CREATE TABLE job_dispatch_batches (
    id         uuid        PRIMARY KEY,
    job_ids    uuid[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
