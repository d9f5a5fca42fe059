-- An attempt is identified by its epoch (the fencing token of one dispatch),
-- not only by its number: a late result from a superseded attempt (recorded
-- as `fenced`) may share its number with the attempt that replaced it.
ALTER TABLE attempts DROP CONSTRAINT attempts_invocation_id_attempt_key;
ALTER TABLE attempts ADD CONSTRAINT attempts_invocation_id_attempt_epoch_key UNIQUE (invocation_id, attempt, epoch);
DROP INDEX attempts_by_invocation;
CREATE INDEX attempts_by_invocation ON attempts (invocation_id, epoch);
