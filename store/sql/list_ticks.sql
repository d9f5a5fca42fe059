-- $1: function or ''; $2: limit. Newest first.
SELECT schedule_id, function, scheduled_ms, outcome, invocation_id, recorded_ms
FROM cron_ticks
WHERE ($1 = '' OR function = $1)
ORDER BY scheduled_ms DESC, schedule_id
LIMIT $2
