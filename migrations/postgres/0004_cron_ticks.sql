-- The cron ledger: one row per schedule tick, whatever became of it
-- (fired, caught_up, skipped_overlap, missed_by_policy). The primary key
-- makes each tick's fate decided once however many brokers run.
CREATE TABLE cron_ticks (
    schedule_id   TEXT COLLATE "C" NOT NULL,
    function      TEXT COLLATE "C" NOT NULL,
    scheduled_ms  BIGINT NOT NULL,
    outcome       TEXT COLLATE "C" NOT NULL,
    invocation_id TEXT COLLATE "C",
    recorded_ms   BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, scheduled_ms)
);
CREATE INDEX cron_ticks_by_function ON cron_ticks (function, scheduled_ms);
