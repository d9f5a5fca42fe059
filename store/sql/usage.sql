-- Billed ms and GB-seconds per function: every attempt counts, as Lambda bills.
-- $1: function or '' for all; $2/$3: started_ms window, 0 = unbounded.
SELECT function,
       COUNT(*),
       CAST(SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END) AS BIGINT),
       CAST(SUM(CASE WHEN cold THEN 1 ELSE 0 END) AS BIGINT),
       CAST(SUM(billed_ms) AS BIGINT),
       CAST(SUM(billed_ms * memory_mb) AS BIGINT)
FROM attempts
WHERE ($1 = '' OR function = $1)
  AND ($2 = 0 OR started_ms >= $2)
  AND ($3 = 0 OR started_ms < $3)
GROUP BY function
ORDER BY function
