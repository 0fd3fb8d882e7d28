#!/usr/bin/env bash
# Builds the local NATS image the container tests use, without pulling anything:
# `FROM scratch` + Debian's nats-server + its ldd libraries (see ci/scratch-image.sh).
#
#   ci/nats-image/build.sh            # builds $QW_NATS_IMAGE (default localhost/queue-worker-nats:2.9)
#
# Idempotent: a no-op (milliseconds) when the image exists and was built from the same binary.
# Installs nats-server with apt-get when it is missing and this is root on Debian.
# Machines that can pull images may skip this and set QW_NATS_IMAGE=nats:2.10 instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
image="${QW_NATS_IMAGE:-localhost/queue-worker-nats:2.9}"

bin="${NATS_SERVER_BIN:-$(command -v nats-server || true)}"
if [ -z "$bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "nats-image: installing nats-server (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    bin=$(command -v nats-server)
  else
    echo "nats-image: nats-server not found (apt-get install nats-server, or set NATS_SERVER_BIN)" >&2
    exit 1
  fi
fi
exec "$here/../scratch-image.sh" "$image" "$bin" "$here/Dockerfile"
