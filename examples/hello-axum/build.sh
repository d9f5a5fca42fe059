#!/bin/sh
# Build the example and place it as dist/bootstrap, ready for `stoke deploy examples/hello-axum/dist`.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cargo build --release --manifest-path "$root/Cargo.toml" -p stoke-example-hello-axum
cp "$root/target/release/hello-axum" "$here/dist/bootstrap"
echo "built $here/dist/bootstrap"
