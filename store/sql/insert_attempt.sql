INSERT INTO attempts (invocation_id, function, version, idempotency_key, attempt, epoch, trigger, worker,
                      started_ms, ended_ms, duration_us, billed_ms, memory_mb, max_memory_used_kb, cold,
                      init_duration_us, outcome, error_type, error_message)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (invocation_id, attempt, epoch) DO NOTHING
