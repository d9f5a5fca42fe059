-- $1 function, $2 alias, $3 version (must exist), $4 now.
INSERT INTO aliases (function, name, version, updated_ms)
SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM function_versions v WHERE v.function = $1 AND v.version = $3)
ON CONFLICT (function, name) DO UPDATE SET version = excluded.version, updated_ms = excluded.updated_ms
