SELECT host, username, password, set_ms FROM registry_credentials WHERE host = $1
