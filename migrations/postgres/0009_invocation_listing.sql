-- Listing invocations and usage per namespace (PostgreSQL). Same meaning as
-- ../sqlite/0009_invocation_listing.sql.

-- ListInvocations reads, newest first by created time, the three tables an
-- invocation's state lives in: every finished one (completions), the ones
-- that ended without a completion (dead_letters) and accepted events not
-- ended yet (invocations); optionally for one function. The invocation id
-- makes the order total, so a page cursor (created_ms, invocation_id)
-- neither skips nor repeats rows.
CREATE INDEX completions_by_created ON completions (created_ms, invocation_id);
CREATE INDEX completions_by_function_created ON completions (function, created_ms, invocation_id);
CREATE INDEX dead_letters_by_created ON dead_letters (created_ms, invocation_id);
CREATE INDEX dead_letters_by_function_created ON dead_letters (function, created_ms, invocation_id);

-- When an accepted event ended (its completion or dead letter was written):
-- set by the triggers below in the same transaction as that row, so the
-- accepted events not ended yet — the queued ones, few among all ever
-- accepted — are found through a partial index instead of by checking every
-- accepted event against completions and dead letters. (The listing still
-- checks those tables: this column only narrows where it looks.)
ALTER TABLE invocations ADD COLUMN ended_ms BIGINT;
UPDATE invocations SET ended_ms = COALESCE(
    (SELECT c.completed_ms FROM completions c WHERE c.invocation_id = invocations.invocation_id),
    (SELECT d.dead_ms FROM dead_letters d WHERE d.invocation_id = invocations.invocation_id));
CREATE INDEX invocations_unended ON invocations (created_ms, invocation_id) WHERE ended_ms IS NULL;
CREATE INDEX invocations_unended_by_function ON invocations (function, created_ms, invocation_id)
    WHERE ended_ms IS NULL;
CREATE FUNCTION stoke_invocation_ended_by_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE invocations SET ended_ms = NEW.completed_ms
    WHERE invocation_id = NEW.invocation_id AND ended_ms IS NULL;
    RETURN NULL;
END;
$$;
CREATE FUNCTION stoke_invocation_ended_by_dead_letter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE invocations SET ended_ms = NEW.dead_ms
    WHERE invocation_id = NEW.invocation_id AND ended_ms IS NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER invocation_ended_by_completion AFTER INSERT ON completions
    FOR EACH ROW EXECUTE FUNCTION stoke_invocation_ended_by_completion();
CREATE TRIGGER invocation_ended_by_dead_letter AFTER INSERT ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION stoke_invocation_ended_by_dead_letter();

-- Usage over a time window across every function (per namespace, per hour
-- or day) reads attempts by start time; and a namespace's functions.
CREATE INDEX attempts_by_time ON attempts (started_ms);
CREATE INDEX functions_by_namespace ON functions (namespace, name);
