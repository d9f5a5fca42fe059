SELECT invocation_id, function, idempotency_key, trigger, created_ms, payload_digest FROM invocations WHERE invocation_id = $1
