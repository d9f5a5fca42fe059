-- When an accepted event was first seen under way (Unix ms): set by the
-- dispatcher once a worker has run its first attempt for 250 ms (not for
-- shorter ones, so the hot path writes nothing more), and with any attempt
-- metered before its end (a retry is due). Until the event ends, it is
-- `running` rather than `queued`, in GetInvocation and in listings, which
-- find the running ones through the partial indexes below. Same meaning in
-- SQLite and PostgreSQL.
ALTER TABLE invocations ADD COLUMN started_ms BIGINT;
UPDATE invocations SET started_ms =
    (SELECT MIN(a.started_ms) FROM attempts a WHERE a.invocation_id = invocations.invocation_id)
WHERE ended_ms IS NULL;
CREATE INDEX invocations_running ON invocations (created_ms, invocation_id)
    WHERE ended_ms IS NULL AND started_ms IS NOT NULL;
CREATE INDEX invocations_running_by_function ON invocations (function, created_ms, invocation_id)
    WHERE ended_ms IS NULL AND started_ms IS NOT NULL;
