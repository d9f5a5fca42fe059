-- An attempt of an accepted event is under way (nothing for one that ended,
-- or was never recorded here: a subject message).
UPDATE invocations SET started_ms = $2 WHERE invocation_id = $1 AND ended_ms IS NULL
