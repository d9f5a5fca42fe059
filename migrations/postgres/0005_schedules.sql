-- Cron schedules created through the admin API (manifest schedules live in
-- the deployed stoke.toml). Paused ones do not fire; their ticks are not
-- caught up on resume.
CREATE TABLE schedules (
    name            TEXT COLLATE "C" PRIMARY KEY,
    function        TEXT COLLATE "C" NOT NULL,
    cron            TEXT COLLATE "C" NOT NULL,
    timezone        TEXT COLLATE "C" NOT NULL,
    overlap         TEXT COLLATE "C" NOT NULL,
    catch_up        TEXT COLLATE "C" NOT NULL,
    catch_up_window BIGINT NOT NULL,
    payload         BYTEA,
    paused          BOOLEAN NOT NULL DEFAULT FALSE,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);
