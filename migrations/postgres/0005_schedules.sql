-- Cron schedules created through the admin API (manifest schedules live in
-- the deployed stoke.toml). Paused ones do not fire; their ticks are not
-- caught up on resume.
CREATE TABLE schedules (
    name            TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    overlap         TEXT NOT NULL,
    catch_up        TEXT NOT NULL,
    catch_up_window BIGINT NOT NULL,
    payload         BYTEA,
    paused          BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);
