-- A late result of a superseded attempt the dispatcher has no row for yet
-- (epoch_recorded.sql said none). Should the dispatcher's `Stoke.WorkerLost`
-- row for that epoch be written concurrently, the late result replaces it,
-- as fence_attempt.sql would have; a row with a real outcome stays.
INSERT INTO attempts (invocation_id, function, version, idempotency_key, attempt, epoch, trigger, worker,
                      started_ms, ended_ms, duration_us, billed_ms, memory_mb, max_memory_used_kb, cold,
                      init_duration_us, outcome, error_type, error_message)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (invocation_id, attempt, epoch) DO UPDATE
SET worker = excluded.worker, started_ms = excluded.started_ms, ended_ms = excluded.ended_ms,
    duration_us = excluded.duration_us, billed_ms = excluded.billed_ms,
    max_memory_used_kb = excluded.max_memory_used_kb, cold = excluded.cold,
    init_duration_us = excluded.init_duration_us, outcome = excluded.outcome,
    error_type = excluded.error_type, error_message = excluded.error_message
WHERE attempts.error_type = 'Stoke.WorkerLost'
