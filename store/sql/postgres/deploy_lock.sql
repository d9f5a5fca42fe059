-- PostgreSQL only: held until the deploy's transaction ends, so concurrent
-- deploys of one function number their versions one after the other
-- (SQLite needs no lock: it has one writer at a time).
-- 1937010539 = 0x73746F6B ("stok"): a key space of our own.
SELECT pg_advisory_xact_lock(1937010539, hashtext($1))
