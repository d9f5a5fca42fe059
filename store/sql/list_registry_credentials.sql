SELECT host, username, password, set_ms FROM registry_credentials ORDER BY host
