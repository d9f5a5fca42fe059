INSERT INTO completions (function, idempotency_key, invocation_id, version, status, result, error_type,
                         error_message, error_raw, attempts, trigger, created_ms, completed_ms, payload_digest)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT DO NOTHING
