INSERT INTO invocations (invocation_id, function, idempotency_key, trigger, created_ms)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (invocation_id) DO NOTHING
