-- API keys: random bearer tokens, stored only as their SHA-256 (a 256-bit random key needs
-- no slow hash), with a scope and optionally the queues they may touch.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The first characters of the key, shown by `keys list` so an operator can tell keys apart.
    prefix       text        NOT NULL,
    hash         bytea       NOT NULL UNIQUE CHECK (length(hash) = 32),
    scope        text        NOT NULL CHECK (scope IN ('admin', 'write', 'read')),
    -- NULL: every queue.
    queues       text[]      CHECK (queues IS NULL OR cardinality(queues) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
