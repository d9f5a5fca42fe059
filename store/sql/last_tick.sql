-- $2: only ticks that started an invocation.
SELECT schedule_id, function, scheduled_ms, outcome, invocation_id, recorded_ms
FROM cron_ticks
WHERE schedule_id = $1 AND (NOT $2 OR invocation_id IS NOT NULL)
ORDER BY scheduled_ms DESC
LIMIT 1
