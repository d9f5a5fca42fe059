INSERT INTO functions (name, current_version, updated_ms, namespace) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET current_version = excluded.current_version, updated_ms = excluded.updated_ms
