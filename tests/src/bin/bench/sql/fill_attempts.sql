-- P6b: attempt rows $1 <= x < $2 of $3 in all, in time order, spread evenly
-- over [$4, $4 + $5) ms; row x is an attempt of function fn-(x % $6).
-- Realistic mix: 1 in 20 cold, 1 in 50 a function error, 1-200 billed ms,
-- half the functions at 128 MB and half at 256. One statement for SQLite
-- and PostgreSQL (a recursive CTE counts).
WITH RECURSIVE n(x) AS (
    SELECT CAST($1 AS BIGINT)
    UNION ALL
    SELECT x + 1 FROM n WHERE x + 1 < $2
)
INSERT INTO attempts (invocation_id, function, version, idempotency_key, attempt, epoch, trigger, worker,
                      started_ms, ended_ms, duration_us, billed_ms, memory_mb, max_memory_used_kb, cold,
                      init_duration_us, outcome, error_type, error_message)
SELECT 'inv-' || x, 'fn-' || (x % $6), 1, 'key-' || x, 1, 1, 'http', 'worker-' || (x % 4),
       $4 + x * $5 / $3, $4 + x * $5 / $3 + x % 200 + 1, (x % 200) * 1000 + 700, x % 200 + 1,
       CASE WHEN x % $6 < $6 / 2 THEN 128 ELSE 256 END, 30000 + x % 1000,
       x % 20 = 0, CASE WHEN x % 20 = 0 THEN 25000 ELSE 0 END,
       CASE WHEN x % 50 = 7 THEN 'function_error' ELSE 'success' END,
       CASE WHEN x % 50 = 7 THEN 'ValueError' END,
       CASE WHEN x % 50 = 7 THEN 'bench' END
FROM n
