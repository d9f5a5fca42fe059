-- An attempt is identified by its epoch (the fencing token of one dispatch),
-- not only by its number: a late result from a superseded attempt (recorded
-- as `fenced`) may share its number with the attempt that replaced it.
-- SQLite cannot drop a table constraint, so the table is rebuilt.
CREATE TABLE attempts_new (
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
    UNIQUE (invocation_id, attempt, epoch)
);
INSERT INTO attempts_new SELECT * FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_by_invocation ON attempts (invocation_id, epoch);
CREATE INDEX attempts_by_function_time ON attempts (function, started_ms);
