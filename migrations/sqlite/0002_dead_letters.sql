-- Events that ended without a completion: attempts exhausted, a terminal
-- error, or too old to run. One row per invocation; a redrive marks it and
-- a later dead-lettering of the same invocation replaces it.
CREATE TABLE dead_letters (
    invocation_id   TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    version         INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    payload         BLOB NOT NULL,
    reason          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    error_type      TEXT,
    error_message   TEXT,
    created_ms      INTEGER NOT NULL,
    dead_ms         INTEGER NOT NULL,
    redriven_ms     INTEGER,
    redrive_count   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_by_function_time ON dead_letters (function, dead_ms);
