-- Indexes for listing invocations and usage per namespace (SQLite). Same
-- meaning as ../postgres/0009_invocation_listing.sql.

-- ListInvocations reads, newest first by created time, the three tables an
-- invocation's state lives in: every finished one (completions), the ones
-- that ended without a completion (dead_letters) and accepted events not
-- yet finished (invocations); optionally for one function. The invocation
-- id makes the order total, so a page cursor (created_ms, invocation_id)
-- neither skips nor repeats rows.
CREATE INDEX completions_by_created ON completions (created_ms, invocation_id);
CREATE INDEX completions_by_function_created ON completions (function, created_ms, invocation_id);
CREATE INDEX dead_letters_by_created ON dead_letters (created_ms, invocation_id);
CREATE INDEX dead_letters_by_function_created ON dead_letters (function, created_ms, invocation_id);
CREATE INDEX invocations_by_created ON invocations (created_ms, invocation_id);
CREATE INDEX invocations_by_function_created ON invocations (function, created_ms, invocation_id);

-- Usage over a time window across every function (per namespace, per hour
-- or day) reads attempts by start time; and a namespace's functions.
CREATE INDEX attempts_by_time ON attempts (started_ms);
CREATE INDEX functions_by_namespace ON functions (namespace, name);
