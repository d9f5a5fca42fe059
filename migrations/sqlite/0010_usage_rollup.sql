-- Usage per function and UTC hour, kept by triggers in the same transaction
-- as every attempt row (insert, and the update of a lost attempt by its late
-- result), so a usage query over months reads one row per function and hour
-- instead of every attempt. The query adds the attempts of the partial
-- hours at a window's edges from `attempts` itself. Same meaning as
-- ../postgres/0010_usage_rollup.sql.
CREATE TABLE usage_hourly (
    function    TEXT NOT NULL,
    hour_ms     BIGINT NOT NULL,
    attempts    BIGINT NOT NULL,
    errors      BIGINT NOT NULL,
    cold_starts BIGINT NOT NULL,
    billed_ms   BIGINT NOT NULL,
    mb_ms       BIGINT NOT NULL,
    PRIMARY KEY (function, hour_ms)
);
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour_ms);

INSERT INTO usage_hourly
SELECT function, started_ms - started_ms % 3600000, COUNT(*),
       SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END), SUM(CASE WHEN cold THEN 1 ELSE 0 END),
       SUM(billed_ms), SUM(billed_ms * memory_mb)
FROM attempts GROUP BY 1, 2;

CREATE TRIGGER usage_of_new_attempt AFTER INSERT ON attempts
BEGIN
    INSERT INTO usage_hourly
    VALUES (NEW.function, NEW.started_ms - NEW.started_ms % 3600000, 1,
            CASE WHEN NEW.outcome = 'success' THEN 0 ELSE 1 END, CASE WHEN NEW.cold THEN 1 ELSE 0 END,
            NEW.billed_ms, NEW.billed_ms * NEW.memory_mb)
    ON CONFLICT (function, hour_ms) DO UPDATE
    SET attempts = attempts + excluded.attempts, errors = errors + excluded.errors,
        cold_starts = cold_starts + excluded.cold_starts, billed_ms = billed_ms + excluded.billed_ms,
        mb_ms = mb_ms + excluded.mb_ms;
END;

CREATE TRIGGER usage_of_changed_attempt AFTER UPDATE OF function, started_ms, billed_ms, memory_mb, cold, outcome
ON attempts
BEGIN
    UPDATE usage_hourly
    SET attempts = attempts - 1,
        errors = errors - CASE WHEN OLD.outcome = 'success' THEN 0 ELSE 1 END,
        cold_starts = cold_starts - CASE WHEN OLD.cold THEN 1 ELSE 0 END,
        billed_ms = billed_ms - OLD.billed_ms, mb_ms = mb_ms - OLD.billed_ms * OLD.memory_mb
    WHERE function = OLD.function AND hour_ms = OLD.started_ms - OLD.started_ms % 3600000;
    INSERT INTO usage_hourly
    VALUES (NEW.function, NEW.started_ms - NEW.started_ms % 3600000, 1,
            CASE WHEN NEW.outcome = 'success' THEN 0 ELSE 1 END, CASE WHEN NEW.cold THEN 1 ELSE 0 END,
            NEW.billed_ms, NEW.billed_ms * NEW.memory_mb)
    ON CONFLICT (function, hour_ms) DO UPDATE
    SET attempts = attempts + excluded.attempts, errors = errors + excluded.errors,
        cold_starts = cold_starts + excluded.cold_starts, billed_ms = billed_ms + excluded.billed_ms,
        mb_ms = mb_ms + excluded.mb_ms;
END;
