UPDATE functions SET current_version = $2, updated_ms = $3
WHERE name = $1 AND EXISTS (SELECT 1 FROM function_versions v WHERE v.function = $1 AND v.version = $2)
