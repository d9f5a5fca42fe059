-- usage_hourly from scratch, for PostgreSQL rows bulk-loaded with triggers off
-- (the backfill of migrations/*/0010_usage_rollup.sql).
DELETE FROM usage_hourly;
INSERT INTO usage_hourly
SELECT function, started_ms - started_ms % 3600000, COUNT(*),
       SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END), SUM(CASE WHEN cold THEN 1 ELSE 0 END),
       SUM(billed_ms), SUM(billed_ms * memory_mb)
FROM attempts GROUP BY 1, 2;
