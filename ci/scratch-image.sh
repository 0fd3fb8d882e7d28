#!/usr/bin/env bash
# Builds a `FROM scratch` image around one dynamically linked binary and the shared libraries
# `ldd` lists for it -- no base image, so no registry is needed.
#
#   ci/scratch-image.sh IMAGE BINARY DOCKERFILE [--strip] [--ca-certs] [--alias NAME]... [--name NAME]
#
# The binary is copied to /<basename> (or /<--name>) in the build context, its libraries under their own
# paths (lib/..., lib64/...), and DOCKERFILE is used as is (it COPYs `rootfs/`). The image gets
# the label `qw.content` = sha256 of the binary, its libraries and the Dockerfile; when an image
# with that tag and that label exists already, nothing is built (idempotent, a few ms).
# --strip strips debug info from the copy (a debug build shrinks ~5x; the original is untouched).
# --ca-certs adds the host's CA bundle (/etc/ssl/certs/ca-certificates.crt) for TLS clients.
# --alias NAME adds /usr/local/bin/NAME, a symlink to the binary (found on the default PATH).
# --name NAME installs the binary as /NAME (default: its file name).
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 IMAGE BINARY DOCKERFILE [--strip] [--ca-certs] [--alias NAME]... [--name NAME]" >&2
  exit 2
fi
image=$1 bin=$2 dockerfile=$3
shift 3
strip="" certs="" aliases=() name=$(basename "$bin")
while [ $# -gt 0 ]; do
  case "$1" in
    --strip) strip=1 ;;
    --ca-certs) certs=/etc/ssl/certs/ca-certificates.crt ;;
    --alias) aliases+=("${2:?--alias needs a name}"); shift ;;
    --name) name="${2:?--name needs a name}"; shift ;;
    *) echo "scratch-image: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || { echo "scratch-image: $bin is not an executable file" >&2; exit 1; }
[ -f "$dockerfile" ] || { echo "scratch-image: no Dockerfile at $dockerfile" >&2; exit 1; }
command -v docker >/dev/null || { echo "scratch-image: docker CLI not found" >&2; exit 1; }

# Shared libraries: "name => /path (addr)" and the loader "/lib64/ld-linux... (addr)".
libs=()
if ldd_out=$(ldd "$bin" 2>/dev/null); then
  while read -r lib; do
    [ -n "$lib" ] && libs+=("$lib")
  done < <(printf '%s\n' "$ldd_out" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
fi

extra=()
if [ -n "$certs" ] && [ -f "$certs" ]; then extra+=("$certs"); fi

content=$( (cat "$bin" "${libs[@]}" "${extra[@]}" "$dockerfile"; echo "$name ${aliases[@]}") | sha256sum | cut -c1-64)
if [ "$(docker image inspect --format '{{ index .Config.Labels "qw.content" }}' "$image" 2>/dev/null || true)" = "$content" ]; then
  echo "scratch-image: $image is up to date"
  exit 0
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/qw-image-XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
if [ -n "$strip" ] && command -v strip >/dev/null; then
  strip --strip-debug -o "$ctx/rootfs/$name" "$bin"
else
  cp "$bin" "$ctx/rootfs/$name"
fi
for lib in "${libs[@]}" "${extra[@]}"; do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
if [ ${#aliases[@]} -gt 0 ]; then
  mkdir -p "$ctx/rootfs/usr/local/bin"
  for a in "${aliases[@]}"; do ln -s "/$name" "$ctx/rootfs/usr/local/bin/$a"; done
fi
cp "$dockerfile" "$ctx/Dockerfile"
echo "scratch-image: building $image from $bin (${#libs[@]} libraries)"
# The classic builder: FROM scratch needs no BuildKit (which may be absent).
if ! out=$(DOCKER_BUILDKIT=0 docker build -q --label "qw.content=$content" -t "$image" "$ctx" 2>&1); then
  printf '%s\n' "$out" >&2
  echo "scratch-image: docker build of $image failed" >&2
  exit 1
fi
echo "scratch-image: built $image"
