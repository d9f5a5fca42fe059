SELECT function, name, version, updated_ms FROM aliases WHERE function = $1 ORDER BY name
