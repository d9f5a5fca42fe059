-- Tenancy and API tokens (PostgreSQL). Same meaning as ../sqlite/0007_tenancy.sql.

-- The namespace that owns each function, set by its first deploy and never
-- changed: tokens scoped to another namespace can neither see nor touch it.
-- A deleted function keeps its row with current_version 0, so its name (and
-- its version history) stays with its namespace.
ALTER TABLE functions ADD COLUMN namespace TEXT COLLATE "C" NOT NULL DEFAULT 'default';

-- Bearer tokens for the admin API and token-protected HTTP triggers. Only
-- the SHA-256 of the secret is stored; the secret is shown once, at creation.
CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    -- A namespace, or '*' for every namespace.
    namespace   TEXT COLLATE "C" NOT NULL,
    -- admin, deployer, invoker, reader or worker.
    role        TEXT COLLATE "C" NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_ms  BIGINT NOT NULL,
    revoked_ms  BIGINT
);
