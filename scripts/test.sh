#!/bin/sh
# Run every test: unit, store contract, and the integration suite that starts
# real nats-server and `stoke` processes. Installs what is missing first.
set -eu
cd "$(dirname "$0")/.."
. scripts/deps.sh

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
# The integration tests run the stoke and hello-rust binaries: build them all.
cargo build --workspace --all-targets
profile=default
if [ "${CI:-}" = true ]; then profile=ci; fi
cargo nextest run --workspace --profile "$profile" "$@"
