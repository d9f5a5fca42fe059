INSERT INTO dead_letters (invocation_id, function, version, idempotency_key, trigger, payload, reason, attempts,
                          error_type, error_message, created_ms, dead_ms, redriven_ms, redrive_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, 0)
ON CONFLICT (invocation_id) DO UPDATE SET
    version = excluded.version, reason = excluded.reason, attempts = excluded.attempts,
    error_type = excluded.error_type, error_message = excluded.error_message,
    dead_ms = excluded.dead_ms, redriven_ms = NULL
