UPDATE schedules SET paused = $2, updated_ms = $3 WHERE name = $1
