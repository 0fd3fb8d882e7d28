#!/usr/bin/env bash
# Builds the queue-worker image without any registry: the release binary (or BINARY), its ldd
# libraries and the CA bundle in a `FROM scratch` image, non-root. For machines that can pull
# base images, deploy/Dockerfile is the multi-stage build.
#
#   ci/worker-image/build.sh [BINARY]      # default: cargo build --release --bin queue-worker
#   QW_WORKER_IMAGE=registry.example.com/queue-worker:0.1.0 ci/worker-image/build.sh
#
# The image also has /usr/local/bin/jetstream-queue-worker (the command the OpenFaaS chart
# runs) and /usr/local/bin/queue-worker. Idempotent: a no-op when the binary did not change.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
image="${QW_WORKER_IMAGE:-localhost/queue-worker:latest}"
bin="${1:-}"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked --bin queue-worker)
  bin="${CARGO_TARGET_DIR:-$root/target}/release/queue-worker"
fi
exec "$root/ci/scratch-image.sh" "$image" "$bin" "$here/Dockerfile" --strip --ca-certs \
  --alias queue-worker --alias jetstream-queue-worker
