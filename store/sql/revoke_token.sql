UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL
