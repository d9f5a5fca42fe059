-- An attempt of an accepted event is under way: the first mark stays.
-- Nothing for an event never recorded here (a subject message). Not guarded
-- by `ended_ms`: a redriven dead letter has one and runs again, and the view
-- of an ended invocation reads its completion or dead letter, never this.
UPDATE invocations SET started_ms = $2 WHERE invocation_id = $1 AND started_ms IS NULL
