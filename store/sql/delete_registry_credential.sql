DELETE FROM registry_credentials WHERE host = $1
