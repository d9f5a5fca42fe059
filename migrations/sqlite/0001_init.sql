-- stoke schema (SQLite). Same meaning as ../postgres/0001_init.sql.
-- Times are Unix milliseconds; durations microseconds unless named _ms.

-- Function packages, addressed by the sha256 of the archive.
CREATE TABLE packages (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created_ms  INTEGER NOT NULL
);

-- Every deployed version; versions count up from 1 per function.
CREATE TABLE function_versions (
    function     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    digest       TEXT NOT NULL REFERENCES packages (digest),
    manifest     TEXT NOT NULL,
    package_size INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (function, version)
);

-- The version each function currently runs.
CREATE TABLE functions (
    name            TEXT PRIMARY KEY,
    current_version INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);

-- Events accepted at the edge (before any attempt), so an async caller can
-- see "queued".
CREATE TABLE invocations (
    invocation_id   TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL
);

-- One row per attempt: what billing counts.
CREATE TABLE attempts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    invocation_id      TEXT NOT NULL,
    function           TEXT NOT NULL,
    version            INTEGER NOT NULL,
    idempotency_key    TEXT NOT NULL,
    attempt            INTEGER NOT NULL,
    epoch              INTEGER NOT NULL,
    trigger            TEXT NOT NULL,
    worker             TEXT NOT NULL,
    started_ms         INTEGER NOT NULL,
    ended_ms           INTEGER NOT NULL,
    duration_us        INTEGER NOT NULL,
    billed_ms          INTEGER NOT NULL,
    memory_mb          INTEGER NOT NULL,
    max_memory_used_kb INTEGER NOT NULL,
    cold               BOOLEAN NOT NULL,
    init_duration_us   INTEGER NOT NULL,
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
    version         INTEGER NOT NULL,
    status          TEXT NOT NULL,
    result          BLOB,
    error_type      TEXT,
    error_message   TEXT,
    error_raw       BLOB,
    attempts        INTEGER NOT NULL,
    trigger         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    completed_ms    INTEGER NOT NULL,
    PRIMARY KEY (function, idempotency_key)
);
