-- Jobs and their executions: PostgreSQL is Courier's system of record. Redis holds only
-- what dispatch needs and can always be rebuilt from these tables.

CREATE TYPE job_state AS ENUM ('scheduled', 'queued', 'running', 'succeeded', 'dead', 'cancelled');

CREATE TABLE jobs (
    id                uuid        PRIMARY KEY,
    queue             text        NOT NULL CHECK (queue ~ '^[a-z0-9_-]{1,64}$'),
    state             job_state   NOT NULL,
    priority          smallint    NOT NULL CHECK (priority BETWEEN 0 AND 9),
    -- The call to make and how to retry it, as the domain's `JobSpec`.
    spec              jsonb       NOT NULL,
    labels            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    max_attempts      integer     NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt may start: `run_at` at first, then the retry time.
    run_at            timestamptz NOT NULL,
    -- Fencing token of the newest attempt PostgreSQL has heard of; worker writes carrying an
    -- older token never overwrite a newer attempt's state.
    token             bigint      NOT NULL DEFAULT 0,
    -- False until the job is in Redis; the dispatcher loop retries these.
    dispatched        boolean     NOT NULL DEFAULT false,
    idempotency_key   text        UNIQUE,
    request_hash      bytea,
    last_status_code  smallint,
    last_error        text,
    last_duration_ms  integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CONSTRAINT attempts_within_max CHECK (attempts <= max_attempts),
    CONSTRAINT finished_iff_terminal CHECK (
        (state IN ('succeeded', 'dead', 'cancelled')) = (finished_at IS NOT NULL)
    ),
    CONSTRAINT idempotency_pair CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);

-- Listing is newest first by id (UUIDv7 is time ordered), filtered by queue and state.
CREATE INDEX jobs_queue_id ON jobs (queue, id DESC);
CREATE INDEX jobs_state_id ON jobs (state, id DESC);
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops);
-- Queue depth counts live jobs per queue and state, finished ones by finish time (which
-- retention also deletes by).
CREATE INDEX jobs_live ON jobs (queue, state, run_at) WHERE state IN ('scheduled', 'queued', 'running');
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_undispatched ON jobs (created_at) WHERE NOT dispatched;
-- Running jobs by last change, to find any whose result never reached PostgreSQL.
CREATE INDEX jobs_running ON jobs (updated_at) WHERE state = 'running';

CREATE TABLE job_executions (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt           integer     NOT NULL CHECK (attempt >= 1),
    token             bigint      NOT NULL,
    worker            text        NOT NULL,
    outcome           text        NOT NULL CHECK (outcome IN
                        ('succeeded', 'failed', 'timeout', 'connection_error', 'cancelled', 'lease_expired')),
    -- A stale execution is the late result of an attempt whose lease was lost; it is kept
    -- for the record but never changed the job.
    stale             boolean     NOT NULL DEFAULT false,
    status_code       smallint,
    error             text,
    duration_ms       integer     NOT NULL CHECK (duration_ms >= 0),
    response_excerpt  text,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    CONSTRAINT ends_after_start CHECK (finished_at >= started_at),
    -- One record per attempt token (and one late, stale one): a batch replayed after a
    -- PostgreSQL outage stays idempotent.
    CONSTRAINT one_record_per_token UNIQUE (job_id, token, stale)
);

CREATE INDEX job_executions_job ON job_executions (job_id, attempt);
