SELECT invocation_id, function, version, idempotency_key, attempt, epoch, trigger, worker,
       started_ms, ended_ms, duration_us, memory_mb, max_memory_used_kb, cold, init_duration_us,
       outcome, error_type, error_message
FROM attempts
WHERE invocation_id = $1
ORDER BY attempt, epoch
