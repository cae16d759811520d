#!/usr/bin/env bash
# Make sure a container engine is here: a Docker engine that answers, or podman (installed from Debian's
# packages when missing and this runs as root), plus debootstrap for the registry-free base image, and
# Prometheus for the container tests.
set -euo pipefail

missing=()
if [ "$("$(dirname "$0")/engine.sh")" != docker ]; then
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
fi
# Prometheus runs the Grafana dashboard's queries against the image in tests/container/test_monitoring.py.
command -v prometheus >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[tools] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "install-tools.sh: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  echo "or use a host with a Docker engine (ENGINE=docker). See DEVELOPERS.md." >&2
  exit 1
fi
