#!/bin/sh
# Counts the words of the event (stdin) and answers JSON (stdout). The
# request's context is in STOKE_* variables. A non-zero exit is an error: the
# last lines of stderr go into its message. A few events misbehave on purpose
# for the integration tests: "fail", "sleep", "big".
set -eu
input=$(cat)
case "$input" in
  fail) echo "asked to fail" >&2; exit 3 ;;
  sleep) sleep 30 ;;
  big) head -c 7340032 /dev/zero; exit 0 ;;
esac
words=$(printf '%s' "$input" | wc -w)
bytes=$(printf '%s' "$input" | wc -c)
instance=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
printf '{"words": %d, "bytes": %d, "request_id": "%s", "attempt": %s, "uid": %d, "instance": "%s"}\n' \
  "$words" "$bytes" "$STOKE_REQUEST_ID" "$STOKE_ATTEMPT" "$(id -u)" "$instance"
