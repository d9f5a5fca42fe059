-- Events that ended without a completion: attempts exhausted, a terminal
-- error, or too old to run. One row per invocation; a redrive marks it and
-- a later dead-lettering of the same invocation replaces it.
CREATE TABLE dead_letters (
    invocation_id   TEXT COLLATE "C" PRIMARY KEY,
    function        TEXT COLLATE "C" NOT NULL,
    version         BIGINT NOT NULL,
    idempotency_key TEXT COLLATE "C" NOT NULL,
    trigger         TEXT COLLATE "C" NOT NULL,
    payload         BYTEA NOT NULL,
    reason          TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL,
    error_type      TEXT COLLATE "C",
    error_message   TEXT COLLATE "C",
    created_ms      BIGINT NOT NULL,
    dead_ms         BIGINT NOT NULL,
    redriven_ms     BIGINT,
    redrive_count   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_by_function_time ON dead_letters (function, dead_ms);
