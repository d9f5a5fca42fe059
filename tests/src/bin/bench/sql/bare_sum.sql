-- P6b's peer: the least work a usage query can do, COUNT and SUM over the
-- same attempt rows (started at or after $1, of function $2 or all when
-- ''), with no join and no grouping.
SELECT COUNT(*), SUM(billed_ms)
FROM attempts
WHERE started_ms >= $1 AND ($2 = '' OR function = $2)
