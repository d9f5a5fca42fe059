UPDATE functions SET current_version = 0, updated_ms = $2 WHERE name = $1 AND current_version <> 0
