-- Claim a dead letter for redrive; no row changes if it is already redriven.
UPDATE dead_letters SET redriven_ms = $2, redrive_count = redrive_count + 1
WHERE invocation_id = $1 AND redriven_ms IS NULL
