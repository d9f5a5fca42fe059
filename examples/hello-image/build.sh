#!/bin/sh
# Build a Lambda container image without Docker, as root on Debian
# (apt-get install mmdebstrap umoci skopeo python3-pip):
#   1. a Debian bookworm root with python3 (mmdebstrap; no device nodes,
#      as container images carry none) becomes the base layer;
#   2. awslambdaric from PyPI and app.py (in /var/task) become the second;
#   3. ENTRYPOINT python3 -m awslambdaric, CMD app.handler, WorkingDir
#      /var/task: Lambda's container contract.
# Writes OUT/layout (an OCI image layout) and OUT/image.tar (the same as an
# oci-archive), OUT defaulting to dist/; then `stoke deploy examples/hello-image/dist`.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/dist}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
rm -rf "$out/layout" "$out/image.tar"

echo "==> base layer: Debian bookworm with python3 (mmdebstrap)"
mmdebstrap --quiet --variant=minbase --include=python3 --mode=root --format=tar \
  --skip=output/dev bookworm "$work/base.tar" "$mirror"

echo "==> top layer: awslambdaric 4.2.2 from PyPI, app.py in /var/task"
site="$work/stage/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site" "$work/stage/var/task"
/usr/bin/python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir \
  --target "$site" awslambdaric==4.2.2
cp "$here/app.py" "$work/stage/var/task/app.py"
tar -C "$work/stage" -cf "$work/top.tar" .

echo "==> image (umoci, skopeo)"
image="$out/layout:latest"
umoci init --layout "$out/layout"
umoci new --image "$image"
umoci raw add-layer --image "$image" "$work/base.tar"
umoci raw add-layer --image "$image" "$work/top.tar"
umoci config --image "$image" \
  --config.entrypoint /usr/bin/python3 --config.entrypoint -m --config.entrypoint awslambdaric \
  --config.cmd app.handler --config.workingdir /var/task \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env LANG=C.UTF-8
skopeo copy --quiet "oci:$image" "oci-archive:$out/image.tar"
echo "built $out/image.tar"
