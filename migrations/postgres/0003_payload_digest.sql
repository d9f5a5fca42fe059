-- sha256 of the event payload an idempotency key was first accepted with,
-- so a reuse of the key with another payload is refused (HTTP 409).
ALTER TABLE invocations ADD COLUMN payload_digest TEXT COLLATE "C";
ALTER TABLE completions ADD COLUMN payload_digest TEXT COLLATE "C";
