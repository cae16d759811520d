#!/usr/bin/env bash
# What the test suite needs beyond Python: Debian's Chromium (the demo page's browser test drives it with
# Playwright; Playwright's own browser download cannot work offline) and the DejaVu fonts (the held-out letters
# of the out-of-distribution tests) and wrk (the benchmark's HTTP load, which the GPU check's dry run drives).
# Installed from Debian's packages when missing and this runs as root.
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || missing+=(fonts-dejavu-core)
command -v wrk >/dev/null || missing+=(wrk)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[test tools] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "tests/install-tools.sh: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
