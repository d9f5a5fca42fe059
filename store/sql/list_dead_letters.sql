-- $1: function or ''; $2/$3: dead_ms window, 0 = unbounded; $4: include redriven ones; $5: limit.
SELECT invocation_id, function, version, idempotency_key, trigger, payload, reason, attempts,
       error_type, error_message, created_ms, dead_ms, redriven_ms, redrive_count
FROM dead_letters
WHERE ($1 = '' OR function = $1)
  AND ($2 = 0 OR dead_ms >= $2)
  AND ($3 = 0 OR dead_ms < $3)
  AND ($4 OR redriven_ms IS NULL)
ORDER BY dead_ms, invocation_id
LIMIT $5
