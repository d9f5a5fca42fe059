SELECT COUNT(*), COALESCE(MAX(version), 0) FROM attempts WHERE invocation_id = $1
