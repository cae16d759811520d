#!/usr/bin/env bash
# Print the container engine to use: $ENGINE, else docker where a Docker engine answers, else podman.
if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker
else echo podman
fi
