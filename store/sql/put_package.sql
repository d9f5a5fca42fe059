INSERT INTO packages (digest, size, data, created_ms) VALUES ($1, $2, $3, $4)
ON CONFLICT (digest) DO NOTHING
