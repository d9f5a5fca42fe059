SELECT id, name, namespace, role, created_ms, revoked_ms FROM tokens WHERE hash = $1 AND revoked_ms IS NULL
