#!/usr/bin/env bash
# Helm post-renderer: pins the queue-worker Deployment's command to `queue-worker run`
# (the chart may add the OpenFaaS Pro flag -license-file=…, which this worker refuses).
#   helm upgrade … --post-renderer deploy/openfaas/post-renderer/post-render.sh
# Needs kubectl (kustomize is built in).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/all.yaml"
cp "$dir/kustomization.yaml" "$dir/queue-worker-command.yaml" "$work/"
kubectl kustomize "$work"
