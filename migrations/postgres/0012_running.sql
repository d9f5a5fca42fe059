-- When an accepted event's first attempt had been running on its worker for
-- a moment (Unix ms; not set for shorter attempts, so the hot path writes
-- nothing more). Until the event ends, GetInvocation and GET
-- /invocations/{id} then say `running` instead of `queued`. Same meaning in
-- SQLite and PostgreSQL.
ALTER TABLE invocations ADD COLUMN started_ms BIGINT;
