SELECT COUNT(*) FROM attempts WHERE invocation_id = $1 AND epoch = $2
