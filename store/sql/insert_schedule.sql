INSERT INTO schedules (name, function, cron, timezone, overlap, catch_up, catch_up_window, payload, paused,
                       created_ms, updated_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (name) DO NOTHING
