-- When an accepted event's attempt was last seen under way (Unix ms): set by
-- the dispatcher once an attempt has held its slot for a moment (not for
-- short ones, so the hot path writes nothing more), while the event has not
-- ended. GetInvocation and GET /invocations/{id} then say `running` instead
-- of `queued` for a first attempt. Same meaning in SQLite and PostgreSQL.
ALTER TABLE invocations ADD COLUMN started_ms BIGINT;
