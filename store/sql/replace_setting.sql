INSERT INTO settings (name, value, set_ms)
VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET value = excluded.value, set_ms = excluded.set_ms
