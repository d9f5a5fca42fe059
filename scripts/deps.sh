#!/bin/sh
# Install what stoke needs on a fresh Debian/Ubuntu machine: nats-server,
# python3 (+pip, for the awslambdaric test; grpcio, grpc-tools and protobuf
# for the Python admin-API client test), Node.js and npm, curl, a C toolchain, PostgreSQL
# (for the Postgres store's tests), lighttpd (the benchmark's CGI peer), umoci, skopeo,
# busybox-static, docker-registry and mmdebstrap (the OCI image and registry tests,
# examples/hello-image), and Rust
# (via rustup, when cargo is missing). Idempotent; sourced by up.sh and test.sh.
set -eu

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=""
command -v nats-server >/dev/null 2>&1 || missing="$missing nats-server"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
[ -x /usr/bin/python3 ] || missing="$missing python3"
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing="$missing python3-pip"
command -v cc >/dev/null 2>&1 || missing="$missing build-essential"
# A non-Rust gRPC client for tests/tests/python_client.rs (Debian's own
# packages, for the system python3: no pip needed).
/usr/bin/python3 -c 'import grpc, grpc_tools.protoc, google.protobuf' >/dev/null 2>&1 ||
  missing="$missing python3-grpcio python3-grpc-tools python3-protobuf"
# Node.js and npm: examples/hello-node and the Node tests (Express and
# serverless-http come from npm at test time).
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# OCI images built without Docker for the image tests (tests/src/images.rs):
# umoci writes layouts, skopeo converts them (oci-archive, docker-archive),
# busybox-static is the test image's only program.
command -v umoci >/dev/null 2>&1 || missing="$missing umoci"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
[ -x /bin/busybox ] || missing="$missing busybox-static"
# A real OCI registry (the CNCF distribution server) the registry tests
# start on a loopback port (tests/src/registry.rs).
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
# mmdebstrap makes the Debian root of examples/hello-image (a Lambda container
# image built without Docker; the image tests and up.sh build it once).
command -v mmdebstrap >/dev/null 2>&1 || missing="$missing mmdebstrap"
# PostgreSQL's server programs (Debian: /usr/lib/postgresql/<version>/bin),
# for the Postgres store's tests: they run initdb and postgres in a temp dir
# on a loopback port. (Debian's package also sets up its own "main" cluster;
# stoke does not use it.)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing="$missing postgresql"
fi
# lighttpd with mod_cgi: the peer of the benchmark's P4 (tests/src/bin/bench/;
# bench_smoke runs it). The harness starts its own on a loopback port.
# (Where services may start, Debian's package also starts its own lighttpd
# on port 80; stoke does not use it.)
if ! command -v lighttpd >/dev/null 2>&1 && [ ! -x /usr/sbin/lighttpd ]; then
  missing="$missing lighttpd"
fi
if [ -n "$missing" ]; then
  echo "==> installing:$missing"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "==> installing Rust (rustup)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    PATH="$HOME/.cargo/bin:$PATH"
  fi
  export PATH
fi
