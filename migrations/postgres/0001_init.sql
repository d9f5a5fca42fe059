-- stoke schema (PostgreSQL). Same meaning as ../sqlite/0001_init.sql.
-- Times are Unix milliseconds; durations microseconds unless named _ms.
-- Types map one to one: SQLite INTEGER = BIGINT (sqlx reads both as i64),
-- BLOB = BYTEA, and TEXT = TEXT COLLATE "C", so text sorts and compares by
-- bytes as SQLite's BINARY collation does, whatever the database's locale.

-- Function packages, addressed by the sha256 of the archive.
CREATE TABLE packages (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL
);

-- Every deployed version; versions count up from 1 per function.
CREATE TABLE function_versions (
    function     TEXT COLLATE "C" NOT NULL,
    version      BIGINT NOT NULL,
    digest       TEXT COLLATE "C" NOT NULL REFERENCES packages (digest),
    manifest     TEXT COLLATE "C" NOT NULL,
    package_size BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (function, version)
);

-- The version each function currently runs.
CREATE TABLE functions (
    name            TEXT COLLATE "C" PRIMARY KEY,
    current_version BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);

-- Events accepted at the edge (before any attempt), so an async caller can
-- see "queued".
CREATE TABLE invocations (
    invocation_id   TEXT COLLATE "C" PRIMARY KEY,
    function        TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT COLLATE "C" NOT NULL,
    trigger         TEXT COLLATE "C" NOT NULL,
    created_ms      BIGINT NOT NULL
);

-- One row per attempt: what billing counts.
CREATE TABLE attempts (
    id                 BIGSERIAL PRIMARY KEY,
    invocation_id      TEXT COLLATE "C" NOT NULL,
    function           TEXT COLLATE "C" NOT NULL,
    version            BIGINT NOT NULL,
    idempotency_key    TEXT COLLATE "C" NOT NULL,
    attempt            BIGINT NOT NULL,
    epoch              BIGINT NOT NULL,
    trigger            TEXT COLLATE "C" NOT NULL,
    worker             TEXT COLLATE "C" NOT NULL,
    started_ms         BIGINT NOT NULL,
    ended_ms           BIGINT NOT NULL,
    duration_us        BIGINT NOT NULL,
    billed_ms          BIGINT NOT NULL,
    memory_mb          BIGINT NOT NULL,
    max_memory_used_kb BIGINT NOT NULL,
    cold               BOOLEAN NOT NULL,
    init_duration_us   BIGINT NOT NULL,
    outcome            TEXT COLLATE "C" NOT NULL,
    error_type         TEXT COLLATE "C",
    error_message      TEXT COLLATE "C",
    UNIQUE (invocation_id, attempt)
);
CREATE INDEX attempts_by_invocation ON attempts (invocation_id);
CREATE INDEX attempts_by_function_time ON attempts (function, started_ms);

-- Exactly one final record per idempotency key (per function).
CREATE TABLE completions (
    function        TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT COLLATE "C" NOT NULL,
    invocation_id   TEXT COLLATE "C" NOT NULL UNIQUE,
    version         BIGINT NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    result          BYTEA,
    error_type      TEXT COLLATE "C",
    error_message   TEXT COLLATE "C",
    error_raw       BYTEA,
    attempts        BIGINT NOT NULL,
    trigger         TEXT COLLATE "C" NOT NULL,
    created_ms      BIGINT NOT NULL,
    completed_ms    BIGINT NOT NULL,
    PRIMARY KEY (function, idempotency_key)
);
