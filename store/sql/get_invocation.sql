SELECT invocation_id, function, idempotency_key, trigger, created_ms, payload_digest, started_ms FROM invocations WHERE invocation_id = $1
