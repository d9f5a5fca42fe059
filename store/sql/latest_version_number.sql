SELECT COALESCE(MAX(version), 0) FROM function_versions WHERE function = $1
