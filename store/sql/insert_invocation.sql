INSERT INTO invocations (invocation_id, function, idempotency_key, trigger, created_ms, payload_digest)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (invocation_id) DO NOTHING
