-- Tenancy and API tokens (SQLite). Same meaning as ../postgres/0007_tenancy.sql.

-- The namespace that owns each function, set by its first deploy and never
-- changed: tokens scoped to another namespace can neither see nor touch it.
-- A deleted function keeps its row with current_version 0, so its name (and
-- its version history) stays with its namespace.
ALTER TABLE functions ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';

-- Bearer tokens for the admin API and token-protected HTTP triggers. Only
-- the SHA-256 of the secret is stored; the secret is shown once, at creation.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- A namespace, or '*' for every namespace.
    namespace   TEXT NOT NULL,
    -- admin, deployer, invoker, reader or worker.
    role        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER
);
