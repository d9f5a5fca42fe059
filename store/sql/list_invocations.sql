-- Invocations newest first, each once, from where its state lives:
--   completions   every finished invocation: succeeded, failed, timed_out;
--   dead_letters  ended without a completion: dead_lettered, or queued again
--                 once redriven (a redrive that completes has a completion
--                 with the same invocation id, which then wins);
--   invocations   accepted events (keyed and async ones) with neither: queued
--                 (waiting, running, or between retries).
-- $1: function or ''; $2: namespace or ''; $3: status or '';
-- $4/$5: created_ms window [$4, $5), 0 = unbounded; $6: idempotency key or '';
-- $7/$8: the cursor, rows strictly after (older than) invocation id $7 created
-- at $8; $7 = '' for the first page; $9: limit.
-- Columns: invocation_id, function, version, status, attempts (as recorded),
-- idempotency_key, trigger, created_ms, completed_ms, error_type,
-- error_message, then for the page only: attempt rows, highest attempt
-- version, the function's namespace.
SELECT p.invocation_id, p.function, p.version, p.status, p.attempts, p.idempotency_key, p.trigger,
       p.created_ms, p.completed_ms, p.error_type, p.error_message,
       (SELECT COUNT(*) FROM attempts a WHERE a.invocation_id = p.invocation_id),
       (SELECT COALESCE(MAX(a.version), 0) FROM attempts a WHERE a.invocation_id = p.invocation_id),
       COALESCE((SELECT f.namespace FROM functions f WHERE f.name = p.function), '')
FROM (
    SELECT c.invocation_id, c.function, c.version, c.status, c.attempts, c.idempotency_key, c.trigger,
           c.created_ms, c.completed_ms, c.error_type, c.error_message
    FROM completions c
    WHERE ($1 = '' OR c.function = $1)
      AND ($2 = '' OR c.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
      AND ($3 = '' OR c.status = $3)
      AND ($4 = 0 OR c.created_ms >= $4)
      AND ($5 = 0 OR c.created_ms < $5)
      AND ($6 = '' OR c.idempotency_key = $6)
      AND ($7 = '' OR c.created_ms < $8 OR (c.created_ms = $8 AND c.invocation_id < $7))
    UNION ALL
    SELECT d.invocation_id, d.function, d.version,
           CASE WHEN d.redriven_ms IS NULL THEN 'dead_lettered' ELSE 'queued' END,
           d.attempts, d.idempotency_key, d.trigger, d.created_ms,
           CASE WHEN d.redriven_ms IS NULL THEN d.dead_ms ELSE 0 END,
           CASE WHEN d.redriven_ms IS NULL THEN d.error_type END,
           CASE WHEN d.redriven_ms IS NULL THEN d.error_message END
    FROM dead_letters d
    WHERE NOT EXISTS (SELECT 1 FROM completions c WHERE c.invocation_id = d.invocation_id)
      AND ($1 = '' OR d.function = $1)
      AND ($2 = '' OR d.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
      AND ($3 = '' OR $3 = CASE WHEN d.redriven_ms IS NULL THEN 'dead_lettered' ELSE 'queued' END)
      AND ($4 = 0 OR d.created_ms >= $4)
      AND ($5 = 0 OR d.created_ms < $5)
      AND ($6 = '' OR d.idempotency_key = $6)
      AND ($7 = '' OR d.created_ms < $8 OR (d.created_ms = $8 AND d.invocation_id < $7))
    UNION ALL
    SELECT i.invocation_id, i.function, 0, 'queued', 0, i.idempotency_key, i.trigger, i.created_ms, 0,
           NULL, NULL
    FROM invocations i
    WHERE NOT EXISTS (SELECT 1 FROM completions c WHERE c.invocation_id = i.invocation_id)
      AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.invocation_id = i.invocation_id)
      AND ($1 = '' OR i.function = $1)
      AND ($2 = '' OR i.function IN (SELECT f.name FROM functions f WHERE f.namespace = $2))
      AND ($3 = '' OR $3 = 'queued')
      AND ($4 = 0 OR i.created_ms >= $4)
      AND ($5 = 0 OR i.created_ms < $5)
      AND ($6 = '' OR i.idempotency_key = $6)
      AND ($7 = '' OR i.created_ms < $8 OR (i.created_ms = $8 AND i.invocation_id < $7))
    ORDER BY created_ms DESC, invocation_id DESC
    LIMIT $9
) p
ORDER BY p.created_ms DESC, p.invocation_id DESC
