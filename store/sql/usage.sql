-- Billed ms and GB-seconds per function, or per namespace, in one bucket or
-- per UTC hour or day: every attempt counts, as Lambda bills, whole in the
-- bucket it started in.
-- $1: function or ''; $2/$3: started_ms window [$2, $3) (the caller binds
-- the widest BIGINTs for an open end, so the range is always an index range);
-- $4: namespace or ''; $5: group by namespace (function '') instead of by
-- function; $6: bucket length in ms (3600000, 86400000), 0 = no buckets
-- (bucket_ms 0). Buckets start at multiples of their length since the Unix
-- epoch, which are UTC hours and days.
-- An attempt of a function with no `functions` row has namespace ''.
SELECT namespace, function, bucket_ms,
       COUNT(*),
       CAST(SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END) AS BIGINT),
       CAST(SUM(CASE WHEN cold THEN 1 ELSE 0 END) AS BIGINT),
       CAST(SUM(billed_ms) AS BIGINT),
       CAST(SUM(billed_ms * memory_mb) AS BIGINT)
FROM (
    SELECT COALESCE(f.namespace, '') AS namespace,
           CASE WHEN $5 THEN '' ELSE a.function END AS function,
           CASE WHEN $6 = 0 THEN 0 ELSE a.started_ms - a.started_ms % $6 END AS bucket_ms,
           a.outcome, a.cold, a.billed_ms, a.memory_mb
    FROM attempts a
    LEFT JOIN functions f ON f.name = a.function
    WHERE ($1 = '' OR a.function = $1)
      AND a.started_ms >= $2
      AND a.started_ms < $3
      AND ($4 = '' OR f.namespace = $4)
) u
GROUP BY namespace, function, bucket_ms
ORDER BY bucket_ms, function, namespace
