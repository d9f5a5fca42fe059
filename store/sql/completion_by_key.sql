SELECT function, idempotency_key, invocation_id, version, status, result, error_type, error_message, error_raw,
       attempts, trigger, created_ms, completed_ms, payload_digest
FROM completions WHERE function = $1 AND idempotency_key = $2
