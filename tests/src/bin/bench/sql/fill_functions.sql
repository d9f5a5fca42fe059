-- P6b: functions fn-0 ... fn-($1 - 1), function i in namespace ns-(i % $2).
-- One statement for SQLite and PostgreSQL (a recursive CTE counts).
WITH RECURSIVE n(x) AS (
    SELECT CAST(0 AS BIGINT)
    UNION ALL
    SELECT x + 1 FROM n WHERE x + 1 < $1
)
INSERT INTO functions (name, current_version, updated_ms, namespace)
SELECT 'fn-' || x, 1, 0, 'ns-' || (x % $2) FROM n
