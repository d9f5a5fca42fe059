-- A late result of a superseded attempt replaces the row the dispatcher
-- wrote when it gave up on that epoch (the worker was lost); a row with the
-- attempt's real outcome is left alone.
UPDATE attempts
SET worker = $3, started_ms = $4, ended_ms = $5, duration_us = $6, billed_ms = $7,
    max_memory_used_kb = $8, cold = $9, init_duration_us = $10, outcome = $11,
    error_type = $12, error_message = $13
WHERE invocation_id = $1 AND epoch = $2 AND error_type = 'Stoke.WorkerLost'
