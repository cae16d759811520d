#!/usr/bin/env bash
# A minimal Debian base image built from Debian packages alone: no registry needed (air-gapped sites).
#   deploy/container/base-image.sh [IMAGE]      (default localhost/modelserver-base:bookworm)
# Environment:
#   DEBIAN_MIRROR   package index to bootstrap from (default http://deb.debian.org/debian; a local mirror
#                   or apt proxy URL at sites without internet)
#   DEBIAN_SUITE    default bookworm (Python 3.11, the version the service is tested with)
#   EXTRA_CA_DIR    folder of extra CA certificates (*.crt) to trust inside the image, e.g. a corporate
#                   TLS-intercepting proxy's; default /usr/local/share/ca-certificates (the host's own)
#   ENGINE          podman (default) or docker
set -euo pipefail

image=${1:-localhost/modelserver-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
ca_dir=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
engine=${ENGINE:-podman}
# Runtime needs only: Python, CA certificates, and tini to forward signals and reap children as PID 1.
packages=ca-certificates,python3,tini

if [ "$(id -u)" != 0 ]; then
  echo "base-image.sh: debootstrap needs root (or run it under 'podman unshare')" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/modelserver-rootfs.XXXXXX)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT

echo "[base] debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; exit 1; }

if compgen -G "$ca_dir/*.crt" >/dev/null; then
  echo "[base] trusting the extra CA certificates in $ca_dir"
  cp "$ca_dir"/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi

# Slim: documentation, man pages, locales other than C, apt's package lists and caches.
rm -rf "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
       "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*

echo "[base] importing into $engine as $image"
tar -C "$rootfs" -c . | "$engine" import --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
"$engine" image ls "$image"
