SELECT id, name, namespace, role, created_ms, revoked_ms FROM tokens ORDER BY created_ms, id
