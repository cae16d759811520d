#!/usr/bin/env bash
# Build the service image from the current Bento:   deploy/container/build-image.sh [cpu|gpu]   (make image)
# Environment (all optional):
#   ENGINE          docker or podman; default docker when a Docker engine answers, otherwise podman
#   BASE_IMAGE      default localhost/modelserver-base:bookworm, built from Debian packages by base-image.sh
#                   when missing (no registry needed); any Debian/Ubuntu image with python3 >= 3.11 works
#   PIP_INDEX_URL   package index for the build (default https://pypi.org/simple; a local mirror when air-gapped)
#   EXTRA_CA_DIR    folder of extra CA certificates (*.crt) for a TLS-intercepting proxy or a private index;
#                   default /usr/local/share/ca-certificates (what the host trusts beyond Mozilla's list)
#   BENTO           the Bento to package (default modelserver:latest; make image builds it first)
#   IMAGE           the tag to give the image (default localhost/modelserver:VARIANT)
set -euo pipefail

variant=${1:-cpu}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bentoml=${BENTOML:-$root/.venv/bin/bentoml}
base=${BASE_IMAGE:-localhost/modelserver-base:bookworm}
image=${IMAGE:-localhost/modelserver:$variant}
context=$root/build/image-$variant
ca_dir=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}

case $variant in cpu|gpu) ;; *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;; esac
ENGINE=$("$here/engine.sh")
command -v "$ENGINE" >/dev/null || { echo "build-image.sh: neither a Docker engine nor podman found (see DEVELOPERS.md)" >&2; exit 1; }

started=$SECONDS
echo "[image] packaging ${BENTO:=modelserver:latest} into $context"
rm -rf "$context" && mkdir -p "$context/bento" "$context/ca"
"$bentoml" export "$BENTO" "$context/modelserver.bento" >/dev/null
tar -xf "$context/modelserver.bento" -C "$context/bento" && rm "$context/modelserver.bento"
# The image runs as an unprivileged user: everything it ships is world-readable, nothing is writable.
chmod -R u=rwX,go=rX "$context/bento"
cp "$here/Containerfile" "$context/"
compgen -G "$ca_dir/*.crt" >/dev/null && cp "$ca_dir"/*.crt "$context/ca/"

if ! "$ENGINE" image inspect "$base" >/dev/null 2>&1; then
  [ "$base" = localhost/modelserver-base:bookworm ] || { echo "build-image.sh: base image $base not found" >&2; exit 1; }
  ENGINE=$ENGINE "$here/base-image.sh" "$base"
fi

version=$(sed -n 's/^version: *//p' "$context/bento/bento.yaml")
echo "[image] $ENGINE build $image (variant $variant, Bento version $version, base $base)"
format=()
[ "$ENGINE" = podman ] && format=(--format docker)   # OCI images have no HEALTHCHECK
"$ENGINE" build "${format[@]}" --file "$context/Containerfile" \
  --build-arg "VARIANT=$variant" --build-arg "BASE_IMAGE=$base" \
  --build-arg "PIP_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}" \
  --tag "$image" --tag "localhost/modelserver:$version-$variant" "$context"
echo "[image] built $image in $((SECONDS - started)) s"
"$ENGINE" image ls --filter "reference=$image"
