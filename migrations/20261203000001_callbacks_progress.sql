-- Callbacks and progress (SPEC 11, issue 13).
--
-- A callback is a job of its own: `callback_of` names the job whose end made it. It is
-- inserted in the transaction that ends its parent, with the idempotency key
-- `callback:{parent}:{round}`, so each end of a job makes exactly one.
ALTER TABLE jobs ADD COLUMN callback_of uuid;
CREATE INDEX jobs_callback_of ON jobs (callback_of) WHERE callback_of IS NOT NULL;

-- The progress a target reported for the job, with the fencing token of the attempt that
-- reported it: a report from an older attempt never replaces a newer one's.
ALTER TABLE jobs
    ADD COLUMN progress_percent smallint CHECK (progress_percent BETWEEN 0 AND 100),
    ADD COLUMN progress_message text CHECK (char_length(progress_message) <= 512),
    ADD COLUMN progress_token   bigint,
    ADD COLUMN progress_at      timestamptz,
    ADD CONSTRAINT progress_whole CHECK ((progress_percent IS NULL) = (progress_at IS NULL));
