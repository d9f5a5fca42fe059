-- Undo a claim whose publish failed.
UPDATE dead_letters SET redriven_ms = NULL, redrive_count = redrive_count - 1
WHERE invocation_id = $1 AND redriven_ms = $2
