-- Operating Courier (SPEC 12): the audit log of every change made through the API or the
-- dashboard, and the dashboard's sign-in sessions.

-- One row per change: who (the key's name; NULL with authentication off), what (an action
-- such as `jobs.cancel` or `jobs.bulk_retry`), what it touched (a job id, a queue, a
-- schedule; a filter for bulk actions) and how many jobs it changed.
CREATE TABLE audit_log (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    key_id    uuid,
    key_name  text,
    action    text        NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target    jsonb,
    count     bigint      CHECK (count >= 0),
    details   jsonb
);

-- A dashboard session: the cookie holds a random secret, stored only as its SHA-256. It
-- lives as long as its key is not revoked and it has not expired.
CREATE TABLE ui_sessions (
    hash        bytea       PRIMARY KEY,
    key_id      uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
