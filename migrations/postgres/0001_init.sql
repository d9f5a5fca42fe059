-- stoke schema (PostgreSQL). Same meaning as ../sqlite/0001_init.sql.
-- Times are Unix milliseconds; durations microseconds unless named _ms.

-- Function packages, addressed by the sha256 of the archive.
CREATE TABLE packages (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL
);

-- Every deployed version; versions count up from 1 per function.
CREATE TABLE function_versions (
    function     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    digest       TEXT NOT NULL REFERENCES packages (digest),
    manifest     TEXT NOT NULL,
    package_size BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (function, version)
);

-- The version each function currently runs.
CREATE TABLE functions (
    name            TEXT PRIMARY KEY,
    current_version BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);

-- Events accepted at the edge (before any attempt), so an async caller can
-- see "queued".
CREATE TABLE invocations (
    invocation_id   TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    created_ms      BIGINT NOT NULL
);

-- One row per attempt: what billing counts.
CREATE TABLE attempts (
    id                 BIGSERIAL PRIMARY KEY,
    invocation_id      TEXT NOT NULL,
    function           TEXT NOT NULL,
    version            BIGINT NOT NULL,
    idempotency_key    TEXT NOT NULL,
    attempt            BIGINT NOT NULL,
    epoch              BIGINT NOT NULL,
    trigger            TEXT NOT NULL,
    worker             TEXT NOT NULL,
    started_ms         BIGINT NOT NULL,
    ended_ms           BIGINT NOT NULL,
    duration_us        BIGINT NOT NULL,
    billed_ms          BIGINT NOT NULL,
    memory_mb          BIGINT NOT NULL,
    max_memory_used_kb BIGINT NOT NULL,
    cold               BOOLEAN NOT NULL,
    init_duration_us   BIGINT NOT NULL,
    outcome            TEXT NOT NULL,
    error_type         TEXT,
    error_message      TEXT,
    UNIQUE (invocation_id, attempt)
);
CREATE INDEX attempts_by_invocation ON attempts (invocation_id);
CREATE INDEX attempts_by_function_time ON attempts (function, started_ms);

-- Exactly one final record per idempotency key (per function).
CREATE TABLE completions (
    function        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    invocation_id   TEXT NOT NULL UNIQUE,
    version         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    result          BYTEA,
    error_type      TEXT,
    error_message   TEXT,
    error_raw       BYTEA,
    attempts        BIGINT NOT NULL,
    trigger         TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    completed_ms    BIGINT NOT NULL,
    PRIMARY KEY (function, idempotency_key)
);
