SELECT schedule_id, function, scheduled_ms, outcome, invocation_id, recorded_ms
FROM cron_ticks
WHERE schedule_id = $1 AND scheduled_ms = $2
