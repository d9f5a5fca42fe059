#!/bin/sh
# Run the whole platform locally with the examples deployed:
#   installs what is missing, builds stoke, starts `stoke up` (HTTP gateway on
#   127.0.0.1:8080, admin API on 127.0.0.1:50051, a local nats-server and the
#   SQLite store under ./.stoke), deploys examples/, and stays in the
#   foreground. Ctrl-C stops everything.
set -eu
cd "$(dirname "$0")/.."
. scripts/deps.sh

echo "==> building (release)"
cargo build --release -p stoke -p stoke-example-hello-rust -p stoke-example-hello-axum
cp target/release/hello-rust examples/hello-rust/dist/bootstrap
cp target/release/hello-axum examples/hello-axum/dist/bootstrap
STOKE=target/release/stoke

# Sandboxes need root (namespaces, cgroups, mounts). Without it, run the
# functions unisolated rather than not at all, and say so.
sandbox=strict
if [ "$(id -u)" -ne 0 ]; then
  echo "==> not root: starting with --sandbox none (functions run WITHOUT isolation; run as root for sandboxes)" >&2
  sandbox=none
fi
$STOKE up --data-dir .stoke --sandbox "$sandbox" &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid' INT TERM
tries=0
while :; do
  if ! kill -0 $pid 2>/dev/null; then
    echo "stoke up exited (see its error above)" >&2
    exit 1
  fi
  if curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1; then break; fi
  tries=$((tries + 1))
  if [ $tries -gt 300 ]; then
    echo "stoke up did not answer on 127.0.0.1:8080 within 30 s" >&2
    kill -INT $pid
    exit 1
  fi
  sleep 0.1
done

# A Lambda container image, built without Docker once (mmdebstrap needs root
# and a Debian mirror; skipped, with a word, where that cannot work).
image=""
if [ -f examples/hello-image/dist/image.tar ]; then
  image=examples/hello-image/dist
elif [ "$(id -u)" -eq 0 ] && [ "$sandbox" = strict ]; then
  echo "==> building examples/hello-image (a Debian root with python3 and awslambdaric; once)"
  if ./examples/hello-image/build.sh; then image=examples/hello-image/dist; fi
fi
[ -n "$image" ] || echo "==> examples/hello-image not deployed (it needs root and a Debian mirror to build)" >&2

for f in examples/hello-python examples/hello-node examples/hello-shell examples/hello-rust/dist examples/hello-axum/dist examples/tick examples/wordcount $image; do
  $STOKE deploy "$f"
done

cat <<'MSG'

==> stoke is running with the examples (tick runs every 10 s by cron). Try, from another terminal:
    curl -X POST localhost:8080/fn/hello -d '{"name":"Ada"}'
    curl -X POST localhost:8080/fn/hello-node -d '{"name":"Ada"}'
    curl -X POST localhost:8080/fn/hello-rust -d '{"name":"Ferris"}'
    curl 'localhost:8080/fn/hello-axum/items/42?q=axum'
    curl -X POST localhost:8080/fn/hello-image -d '{"from":"an image"}'
    curl -X POST localhost:8080/fn/wordcount -d 'one process per event'
    curl -X POST localhost:8080/fn/hello -H 'Prefer: respond-async' -d '{"name":"Async"}'
    target/release/stoke invoke hello-shell --data '{"from":"cli"}'
    target/release/stoke publish greetings.en '{"name":"NATS"}'
    target/release/stoke cron ledger
    target/release/stoke usage
Ctrl-C stops stoke (in-flight invocations finish first).
MSG
wait $pid
