SELECT name, function, cron, timezone, overlap, catch_up, catch_up_window, payload, paused, created_ms, updated_ms
FROM schedules
ORDER BY name
