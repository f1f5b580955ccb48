-- Flow control (SPEC 10, issue 12). A queue's pause and limits, and flow keys' limits,
-- live here and are mirrored into Redis, where the fetch script enforces them; a Redis
-- that lost its data gets them back from these tables. A limit left NULL is no limit.

CREATE TABLE queue_settings (
    queue            text             PRIMARY KEY CHECK (queue ~ '^[a-z0-9_-]{1,64}$'),
    paused           boolean          NOT NULL DEFAULT false,
    rate_per_second  double precision CHECK (rate_per_second > 0 AND rate_per_second <= 1000000),
    rate_burst       integer          CHECK (rate_burst BETWEEN 1 AND 1000000),
    max_concurrency  integer          CHECK (max_concurrency BETWEEN 1 AND 100000),
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT rate_has_burst CHECK ((rate_per_second IS NULL) = (rate_burst IS NULL))
);

CREATE TABLE flow_keys (
    key              text             PRIMARY KEY CHECK (key ~ '^[A-Za-z0-9_.:-]{1,128}$'),
    rate_per_second  double precision CHECK (rate_per_second > 0 AND rate_per_second <= 1000000),
    rate_burst       integer          CHECK (rate_burst BETWEEN 1 AND 1000000),
    max_concurrency  integer          CHECK (max_concurrency BETWEEN 1 AND 100000),
    created_at       timestamptz      NOT NULL DEFAULT now(),
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT rate_has_burst CHECK ((rate_per_second IS NULL) = (rate_burst IS NULL))
);

-- A key's live jobs, for its counts (the job's key is in its spec).
CREATE INDEX jobs_flow_key_live ON jobs ((spec ->> 'flow_key'), queue, state)
    WHERE spec ->> 'flow_key' IS NOT NULL AND state IN ('scheduled', 'queued', 'running');

-- Counts changes to either table, in the changing transaction: a copy in Redis is
-- replaced only by a newer version, so a mirror read before a change can never
-- overwrite the change's own.
CREATE TABLE flow_control_version (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint  NOT NULL
);
INSERT INTO flow_control_version (version) VALUES (0);
