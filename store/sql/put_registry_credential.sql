INSERT INTO registry_credentials (host, username, password, set_ms)
VALUES ($1, $2, $3, $4)
ON CONFLICT (host) DO UPDATE SET username = excluded.username, password = excluded.password, set_ms = excluded.set_ms
