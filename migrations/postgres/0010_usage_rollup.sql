-- Usage per function and UTC hour, kept by a trigger in the same
-- transaction as every attempt row (insert, and the update of a lost
-- attempt by its late result), so a usage query over months reads one row
-- per function and hour instead of every attempt. The query adds the
-- attempts of the partial hours at a window's edges from `attempts` itself.
-- Same meaning as ../sqlite/0010_usage_rollup.sql.
CREATE TABLE usage_hourly (
    function    TEXT COLLATE "C" NOT NULL,
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

-- Add one attempt's figures (sign 1) or take them away (sign -1).
CREATE FUNCTION stoke_usage_add(fn TEXT, started BIGINT, outcome TEXT, cold BOOLEAN, billed BIGINT,
                                memory BIGINT, sign BIGINT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO usage_hourly
    VALUES (fn, started - started % 3600000, sign, sign * (CASE WHEN outcome = 'success' THEN 0 ELSE 1 END),
            sign * (CASE WHEN cold THEN 1 ELSE 0 END), sign * billed, sign * billed * memory)
    ON CONFLICT (function, hour_ms) DO UPDATE
    SET attempts = usage_hourly.attempts + excluded.attempts, errors = usage_hourly.errors + excluded.errors,
        cold_starts = usage_hourly.cold_starts + excluded.cold_starts,
        billed_ms = usage_hourly.billed_ms + excluded.billed_ms, mb_ms = usage_hourly.mb_ms + excluded.mb_ms
$$;
CREATE FUNCTION stoke_usage_of_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM stoke_usage_add(OLD.function, OLD.started_ms, OLD.outcome, OLD.cold, OLD.billed_ms,
                                OLD.memory_mb, -1);
    END IF;
    PERFORM stoke_usage_add(NEW.function, NEW.started_ms, NEW.outcome, NEW.cold, NEW.billed_ms, NEW.memory_mb, 1);
    RETURN NULL;
END $$;
CREATE TRIGGER usage_of_attempt AFTER INSERT OR UPDATE OF function, started_ms, billed_ms, memory_mb, cold, outcome
ON attempts FOR EACH ROW EXECUTE FUNCTION stoke_usage_of_attempt();
