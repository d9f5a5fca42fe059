INSERT INTO functions (name, current_version, updated_ms) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET current_version = excluded.current_version, updated_ms = excluded.updated_ms
