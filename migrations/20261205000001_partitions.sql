-- PostgreSQL partitioned by time (SPEC 13, issue 15). At 1,000 jobs a second, 7 days of
-- retention is 600 million rows, and deleting expired rows one by one becomes the
-- heaviest load in the database. `jobs` and `job_executions` are split into one
-- partition per UTC day of the job's id (a UUIDv7 starts with its creation time in
-- milliseconds, so a range of ids is a range of time, and a lookup by id is pruned to
-- one partition). Retention drops a whole day once everything in it has expired
-- (`repo::partitions`); Courier creates the days ahead itself.
--
-- An existing database is converted without rewriting its rows: the old tables become
-- the `_legacy` partitions, holding every id up to the end of the day of this migration,
-- and are dropped like any other day once all of them has expired.

-- The lowest UUIDv7 of the millisecond `t`: the bound of a partition.
CREATE FUNCTION courier_id_floor(t timestamptz) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0')
                  || '00000000000000000000')::uuid $$;

-- The millisecond a UUIDv7 was made.
CREATE FUNCTION courier_id_time(id uuid) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_timestamp(('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0) $$;

-- 1. A unique index on a partitioned table must contain the partition key, so an
--    idempotency key, unique across all days, moves to a table of its own.
CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY,
    job_id        uuid        NOT NULL,
    request_hash  bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Retention removes a job's key with the job.
CREATE INDEX idempotency_keys_job ON idempotency_keys (job_id);
INSERT INTO idempotency_keys (key, job_id, request_hash, created_at)
    SELECT idempotency_key, id, request_hash, created_at FROM jobs WHERE idempotency_key IS NOT NULL;
ALTER TABLE jobs DROP COLUMN idempotency_key, DROP COLUMN request_hash;

-- Before PostgreSQL 17 an identity column of a partitioned table gives no value to a row
-- written straight into a partition: an execution's id comes from a sequence of its
-- own, the default of every partition too.
ALTER TABLE job_executions ALTER COLUMN id DROP IDENTITY;
CREATE SEQUENCE job_executions_id_seq;
ALTER TABLE job_executions ALTER COLUMN id SET DEFAULT nextval('job_executions_id_seq');
SELECT setval('job_executions_id_seq', COALESCE((SELECT max(id) FROM job_executions), 0) + 1, false);

-- A finished job's retention depends on its state; dead and cancelled ones are few, and
-- this index finds them without reading the succeeded ones when retention checks a day.
CREATE INDEX jobs_failed_finished ON jobs (finished_at) WHERE state IN ('dead', 'cancelled');

-- 2. The old tables become partitions. Their indexes and constraints keep their own
--    names (`_legacy`), and the partitioned tables take the old names.
ALTER TABLE jobs RENAME TO jobs_legacy;
ALTER TABLE job_executions RENAME TO job_executions_legacy;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid IN ('jobs_legacy'::regclass, 'job_executions_legacy'::regclass)
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, r.relname || '_legacy');
    END LOOP;
END $$;

-- Same columns, defaults and CHECK constraints (by name, as attaching wants them).
CREATE TABLE jobs (LIKE jobs_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (id))
    PARTITION BY RANGE (id);

CREATE INDEX jobs_queue_id ON jobs (queue, id DESC);
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops) WHERE labels <> '{}'::jsonb;
CREATE INDEX jobs_live ON jobs (queue, state, run_at) WHERE state IN ('scheduled', 'queued', 'running');
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_failed_finished ON jobs (finished_at) WHERE state IN ('dead', 'cancelled');
CREATE INDEX jobs_running ON jobs (updated_at) WHERE state = 'running';
CREATE INDEX jobs_flow_key_live ON jobs ((spec ->> 'flow_key'), queue, state)
    WHERE spec ->> 'flow_key' IS NOT NULL AND state IN ('scheduled', 'queued', 'running');
CREATE INDEX jobs_callback_of ON jobs (callback_of) WHERE callback_of IS NOT NULL;

CREATE TABLE job_executions (
    LIKE job_executions_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    -- One record per attempt token (and one late, stale one) is the key: a primary key
    -- of a partitioned table must contain the partition key, and this one does. An
    -- execution's `id` still comes from its sequence, unique without an index of its own
    -- (pgbench, 1,000 records a statement into a fresh table: 287 statements/s before
    -- partitioning, 266 with a primary key on (job_id, id) beside this one, 319 with
    -- this one alone).
    CONSTRAINT one_record_per_token PRIMARY KEY (job_id, token, stale)
) PARTITION BY RANGE (job_id);
ALTER SEQUENCE job_executions_id_seq OWNED BY job_executions.id;

-- 3. The old rows: as partitions up to the end of today, or gone when there are none.
DO $$
DECLARE
    edge uuid := courier_id_floor(date_trunc('day', now(), 'UTC') + interval '1 day');
BEGIN
    IF EXISTS (SELECT 1 FROM jobs_legacy) OR EXISTS (SELECT 1 FROM job_executions_legacy) THEN
        -- The parent's primary key on job_executions is its one record per token.
        ALTER TABLE job_executions_legacy DROP CONSTRAINT job_executions_pkey_legacy,
            DROP CONSTRAINT one_record_per_token_legacy,
            ADD CONSTRAINT job_executions_legacy_pkey PRIMARY KEY (job_id, token, stale);
        -- Past any id already written (a clock ahead of this database's).
        edge := GREATEST(edge, (
            SELECT courier_id_floor(date_trunc('day', courier_id_time(x), 'UTC') + interval '1 day')
            FROM (SELECT id AS x FROM jobs_legacy UNION ALL SELECT job_id FROM job_executions_legacy) m
            ORDER BY x DESC LIMIT 1));
        EXECUTE format('ALTER TABLE jobs ATTACH PARTITION jobs_legacy FOR VALUES FROM (MINVALUE) TO (%L)', edge);
        EXECUTE format('ALTER TABLE job_executions ATTACH PARTITION job_executions_legacy
                        FOR VALUES FROM (MINVALUE) TO (%L)', edge);
    ELSE
        DROP TABLE jobs_legacy;
        DROP TABLE job_executions_legacy;
    END IF;
END $$;

-- 4. One partition per UTC day, `jobs_pYYYYMMDD` and `job_executions_pYYYYMMDD`, from
--    `first_day` to `last_day`. A day already made, overlapping the legacy partition, or
--    whose ids the DEFAULT partition already holds is left as it is. Courier calls this
--    ahead of time (`repo::partitions`); several processes may, so it takes a lock.
--    Returns how many days it made.
CREATE FUNCTION courier_create_partitions(first_day date, last_day date) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    d     date;
    lo    uuid;
    hi    uuid;
    made  integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('courier_create_partitions'));
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        CONTINUE WHEN to_regclass(format('jobs_p%s', to_char(d, 'YYYYMMDD'))) IS NOT NULL;
        lo := courier_id_floor(d::timestamp AT TIME ZONE 'UTC');
        hi := courier_id_floor((d + 1)::timestamp AT TIME ZONE 'UTC');
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF jobs FOR VALUES FROM (%L) TO (%L)',
                           format('jobs_p%s', to_char(d, 'YYYYMMDD')), lo, hi);
            EXECUTE format('CREATE TABLE %I PARTITION OF job_executions FOR VALUES FROM (%L) TO (%L)',
                           format('job_executions_p%s', to_char(d, 'YYYYMMDD')), lo, hi);
            made := made + 1;
        EXCEPTION
            -- 42P17: overlaps a partition (legacy); 23514: the DEFAULT partition holds ids of the day.
            WHEN invalid_object_definition OR check_violation THEN NULL;
        END;
    END LOOP;
    RETURN made;
END $$;

-- Ids no day partition holds (a day not created in time) land here, so an insert never
-- fails for want of a partition; retention deletes from it row by row.
CREATE TABLE jobs_default PARTITION OF jobs DEFAULT;
CREATE TABLE job_executions_default PARTITION OF job_executions DEFAULT;

-- Today and three days ahead, so that jobs have their day before Courier first runs.
SELECT courier_create_partitions((now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 3);
