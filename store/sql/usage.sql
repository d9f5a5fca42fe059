-- Billed ms and GB-seconds per function, or per namespace, in one bucket or
-- per UTC hour or day: every attempt counts, as Lambda bills, whole in the
-- bucket it started in.
-- $1: function or ''; $2/$3: started_ms window [$2, $3) (the caller binds
-- the widest BIGINTs for an open end); $4: namespace or ''; $5: group by
-- namespace (function '') instead of by function; $6: bucket length in ms
-- (3600000, 86400000), 0 = no buckets (bucket_ms 0). Buckets start at
-- multiples of their length since the Unix epoch, which are UTC hours and
-- days.
-- The whole UTC hours of the window, [$7, $8), come from usage_hourly (kept
-- by triggers on attempts); the partial hours at its edges, [$2, $7) and
-- [$8, $3), from the attempts themselves (two ranges of attempts_by_time:
-- SQLite's multi-index OR, PostgreSQL's BitmapOr).
-- An attempt of a function with no `functions` row has namespace ''.
SELECT namespace, function, bucket_ms,
       CAST(SUM(attempts) AS BIGINT), CAST(SUM(errors) AS BIGINT), CAST(SUM(cold_starts) AS BIGINT),
       CAST(SUM(billed_ms) AS BIGINT), CAST(SUM(mb_ms) AS BIGINT)
FROM (
    SELECT COALESCE(f.namespace, '') AS namespace,
           CASE WHEN $5 THEN '' ELSE u.function END AS function,
           CASE WHEN $6 = 0 THEN 0 ELSE u.hour_ms - u.hour_ms % $6 END AS bucket_ms,
           u.attempts, u.errors, u.cold_starts, u.billed_ms, u.mb_ms
    FROM usage_hourly u
    LEFT JOIN functions f ON f.name = u.function
    WHERE ($1 = '' OR u.function = $1)
      AND u.hour_ms >= $7
      AND u.hour_ms < $8
      AND ($4 = '' OR f.namespace = $4)
    UNION ALL
    SELECT COALESCE(f.namespace, '') AS namespace,
           CASE WHEN $5 THEN '' ELSE a.function END AS function,
           CASE WHEN $6 = 0 THEN 0 ELSE a.started_ms - a.started_ms % $6 END AS bucket_ms,
           1, CASE WHEN a.outcome = 'success' THEN 0 ELSE 1 END, CASE WHEN a.cold THEN 1 ELSE 0 END,
           a.billed_ms, a.billed_ms * a.memory_mb
    FROM attempts a
    LEFT JOIN functions f ON f.name = a.function
    WHERE ($1 = '' OR a.function = $1)
      AND ((a.started_ms >= $2 AND a.started_ms < $7) OR (a.started_ms >= $8 AND a.started_ms < $3))
      AND ($4 = '' OR f.namespace = $4)
) u
GROUP BY namespace, function, bucket_ms
HAVING SUM(attempts) > 0
ORDER BY bucket_ms, function, namespace
