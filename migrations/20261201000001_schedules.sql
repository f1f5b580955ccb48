-- Recurring schedules (SPEC 9, issue 11). A schedule makes a job at each occurrence of a
-- cron expression or a period; `next_at` is the first occurrence not yet decided, and
-- every decided occurrence has a row in `schedule_runs`: fired (with its job), or
-- skipped with the reason. The scheduler claims due schedules with
-- FOR UPDATE SKIP LOCKED and, in one transaction, inserts the occurrences' jobs (each
-- with the idempotency key `schedule:{id}:{occurrence}`), their runs, and the new
-- `next_at`: exactly one job per occurrence, whichever process decides it.

CREATE TABLE schedules (
    id                 uuid        PRIMARY KEY,
    name               text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,128}$'),
    cron               text,
    timezone           text        NOT NULL DEFAULT 'UTC',
    every_ms           bigint      CHECK (every_ms > 0),
    -- The job each occurrence makes: queue, spec and labels (`schedule::JobTemplate`),
    -- secret header values sealed for the schedule.
    job                json        NOT NULL,
    overlap            text        NOT NULL DEFAULT 'skip'
                                   CHECK (overlap IN ('skip', 'buffer_one', 'allow_all', 'cancel_previous')),
    catchup_policy     text        NOT NULL DEFAULT 'once' CHECK (catchup_policy IN ('skip', 'once', 'all')),
    catchup_window_ms  bigint      NOT NULL DEFAULT 86400000 CHECK (catchup_window_ms >= 0),
    catchup_max        integer     NOT NULL DEFAULT 100 CHECK (catchup_max >= 1),
    jitter_ms          bigint      NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
    start_at           timestamptz,
    end_at             timestamptz,
    paused             boolean     NOT NULL DEFAULT false,
    note               text        NOT NULL DEFAULT '',
    -- The first occurrence not yet decided; NULL once the schedule has ended.
    next_at            timestamptz,
    -- The job of the latest fired occurrence, for the overlap policy.
    last_job_id        uuid,
    -- An occurrence waiting for that job to finish (overlap `buffer_one`).
    buffered_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT one_calendar CHECK ((cron IS NULL) <> (every_ms IS NULL)),
    CONSTRAINT ends_after_start CHECK (end_at IS NULL OR start_at IS NULL OR end_at >= start_at)
);

-- What the scheduler waits for and claims.
CREATE INDEX schedules_next ON schedules (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX schedules_buffered ON schedules (buffered_at) WHERE buffered_at IS NOT NULL;

CREATE TABLE schedule_runs (
    schedule_id  uuid        NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    -- The occurrence's time in the calendar (a trigger's: when it was asked for).
    occurrence   timestamptz NOT NULL,
    -- How it came about: the calendar, a trigger, or a backfill.
    kind         text        NOT NULL CHECK (kind IN ('calendar', 'trigger', 'backfill')),
    outcome      text        NOT NULL CHECK (outcome IN ('fired', 'skipped', 'buffered')),
    reason       text        CHECK (reason IN ('overlap', 'missed', 'paused')),
    job_id       uuid,
    -- When it was decided (fired: the job's creation).
    decided_at   timestamptz NOT NULL,
    -- How long after its time (plus jitter) the occurrence's job was created.
    lateness_ms  bigint,
    PRIMARY KEY (schedule_id, occurrence),
    CONSTRAINT fired_has_job CHECK ((outcome = 'fired') = (job_id IS NOT NULL)),
    CONSTRAINT skipped_has_reason CHECK ((outcome = 'skipped') = (reason IS NOT NULL))
);
