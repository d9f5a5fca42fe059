INSERT INTO tokens (id, name, namespace, role, hash, created_ms, sigv4_secret) VALUES ($1, $2, $3, $4, $5, $6, $7)
