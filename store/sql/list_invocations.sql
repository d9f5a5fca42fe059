-- Invocations newest first, each once, from where its state lives:
--   completions   every finished invocation: succeeded, failed, timed_out;
--   dead_letters  ended without a completion: dead_lettered, or queued or
--                 running again once redriven (a redrive that completes has a
--                 completion with the same invocation id, which then wins);
--   invocations   accepted events (keyed and async ones) with neither, in
--                 two branches: queued, and running (`started_ms` set, by
--                 the dispatcher or with a metered attempt: migration 0012),
--                 as the store's `invocation` view says. `ended_ms IS NULL`
--                 (set by triggers, migration 0009) walks a partial index of
--                 those (the running ones have one of their own) instead of
--                 every event ever accepted.
-- $1: function or ''; $2: namespace or ''; $3: status or '';
-- $4: created at or after (0 = unbounded); $5: idempotency key or '';
-- $6/$7: the upper bound, as a row value (an index range): rows before
-- (created_ms $7, invocation id $6), newest first. That is the page cursor
-- (the last row of the page before), or (until, '') for "created before
-- until", whichever is lower; the largest BIGINT and '' when neither.
-- $8: limit.
-- Columns: invocation_id, function, version, status, attempts (as recorded),
-- idempotency_key, trigger, created_ms, completed_ms, error_type,
-- error_message, then for the page only: attempt rows, highest attempt
-- version, the function's namespace.
-- Each branch is cut to the page size on its own (newest first, along its
-- (created_ms, invocation_id) index) before the four are merged, so no
-- database sorts more than four pages' worth of rows. The `$3 IN (...)`
-- terms depend on the parameter only, so a status filter skips the tables
-- that cannot hold that status. Run unprepared (see sql_catalog.rs).
SELECT p.invocation_id, p.function, p.version, p.status, p.attempts, p.idempotency_key, p.trigger,
       p.created_ms, p.completed_ms, p.error_type, p.error_message,
       (SELECT COUNT(*) FROM attempts a WHERE a.invocation_id = p.invocation_id),
       (SELECT COALESCE(MAX(a.version), 0) FROM attempts a WHERE a.invocation_id = p.invocation_id),
       COALESCE((SELECT f.namespace FROM functions f WHERE f.name = p.function), '')
FROM (
    SELECT * FROM (
        SELECT c.invocation_id, c.function, c.version, c.status, c.attempts, c.idempotency_key, c.trigger,
               c.created_ms, c.completed_ms, c.error_type, c.error_message
        FROM completions c
        WHERE $3 IN ('', 'succeeded', 'failed', 'timed_out')
          AND ($1 = '' OR c.function = $1)
          AND ($2 = '' OR c.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
          AND ($3 = '' OR c.status = $3)
          AND c.created_ms >= $4
          AND ($5 = '' OR c.idempotency_key = $5)
          AND (c.created_ms, c.invocation_id) < ($7, $6)
        ORDER BY c.created_ms DESC, c.invocation_id DESC
        LIMIT $8
    ) AS done
    UNION ALL
    SELECT * FROM (
        SELECT d.invocation_id, d.function, d.version,
               CASE WHEN d.redriven_ms IS NULL THEN 'dead_lettered'
                    WHEN (SELECT 1 FROM attempts a WHERE a.invocation_id = d.invocation_id LIMIT 1) IS NOT NULL
                      OR (SELECT i.started_ms FROM invocations i WHERE i.invocation_id = d.invocation_id) IS NOT NULL
                    THEN 'running' ELSE 'queued' END AS status,
               d.attempts, d.idempotency_key, d.trigger, d.created_ms,
               CASE WHEN d.redriven_ms IS NULL THEN d.dead_ms ELSE 0 END AS completed_ms,
               CASE WHEN d.redriven_ms IS NULL THEN d.error_type END AS error_type,
               CASE WHEN d.redriven_ms IS NULL THEN d.error_message END AS error_message
        FROM dead_letters d
        WHERE $3 IN ('', 'queued', 'running', 'dead_lettered')
          AND NOT EXISTS (SELECT 1 FROM completions c WHERE c.invocation_id = d.invocation_id)
          AND ($1 = '' OR d.function = $1)
          AND ($2 = '' OR d.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
          AND ($3 = '' OR $3 = CASE WHEN d.redriven_ms IS NULL THEN 'dead_lettered'
                                   WHEN (SELECT 1 FROM attempts a WHERE a.invocation_id = d.invocation_id LIMIT 1) IS NOT NULL
                                     OR (SELECT i.started_ms FROM invocations i
                                         WHERE i.invocation_id = d.invocation_id) IS NOT NULL
                                   THEN 'running' ELSE 'queued' END)
          AND d.created_ms >= $4
          AND ($5 = '' OR d.idempotency_key = $5)
          AND (d.created_ms, d.invocation_id) < ($7, $6)
        ORDER BY d.created_ms DESC, d.invocation_id DESC
        LIMIT $8
    ) AS dead
    UNION ALL
    SELECT * FROM (
        SELECT i.invocation_id, i.function, 0 AS version, 'queued' AS status, 0 AS attempts, i.idempotency_key,
               i.trigger, i.created_ms, 0 AS completed_ms, NULL AS error_type, NULL AS error_message
        FROM invocations i
        WHERE $3 IN ('', 'queued')
          AND i.ended_ms IS NULL
          AND i.started_ms IS NULL
          AND NOT EXISTS (SELECT 1 FROM completions c WHERE c.invocation_id = i.invocation_id)
          AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.invocation_id = i.invocation_id)
          AND ($1 = '' OR i.function = $1)
          AND ($2 = '' OR i.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
          AND i.created_ms >= $4
          AND ($5 = '' OR i.idempotency_key = $5)
          AND (i.created_ms, i.invocation_id) < ($7, $6)
        ORDER BY i.created_ms DESC, i.invocation_id DESC
        LIMIT $8
    ) AS queued
    UNION ALL
    SELECT * FROM (
        SELECT r.invocation_id, r.function, 0 AS version, 'running' AS status, 0 AS attempts, r.idempotency_key,
               r.trigger, r.created_ms, 0 AS completed_ms, NULL AS error_type, NULL AS error_message
        FROM invocations r
        WHERE $3 IN ('', 'running')
          AND r.ended_ms IS NULL
          AND r.started_ms IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM completions c WHERE c.invocation_id = r.invocation_id)
          AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.invocation_id = r.invocation_id)
          AND ($1 = '' OR r.function = $1)
          AND ($2 = '' OR r.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
          AND r.created_ms >= $4
          AND ($5 = '' OR r.idempotency_key = $5)
          AND (r.created_ms, r.invocation_id) < ($7, $6)
        ORDER BY r.created_ms DESC, r.invocation_id DESC
        LIMIT $8
    ) AS running
    ORDER BY created_ms DESC, invocation_id DESC
    LIMIT $8
) p
ORDER BY p.created_ms DESC, p.invocation_id DESC
