SELECT invocation_id, function, version, idempotency_key, trigger, payload, reason, attempts,
       error_type, error_message, created_ms, dead_ms, redriven_ms, redrive_count
FROM dead_letters
WHERE invocation_id = $1
