-- The highest attempt number metered for an invocation (0 when none).
SELECT CAST(COALESCE(MAX(attempt), 0) AS BIGINT) FROM attempts WHERE invocation_id = $1
