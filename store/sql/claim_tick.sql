INSERT INTO cron_ticks (schedule_id, function, scheduled_ms, outcome, invocation_id, recorded_ms)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (schedule_id, scheduled_ms) DO NOTHING
