SELECT id, name, namespace, role, created_ms, revoked_ms, sigv4_secret FROM tokens WHERE id = $1 AND revoked_ms IS NULL
