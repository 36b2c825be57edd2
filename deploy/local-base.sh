#!/usr/bin/env bash
# A Debian 12 base image with Python 3.11, built from Debian packages alone, for building
# molt's image where no image registry can be reached (an air-gapped or mirrored host).
#
#   sudo deploy/local-base.sh molt-base:bookworm [--ca FILE] [--wheels DIR] [--mirror URL]
#   docker build -f deploy/Dockerfile -t molt:cpu \
#     --build-arg BUILD_IMAGE=molt-base:bookworm --build-arg RUNTIME_IMAGE=molt-base:bookworm \
#     --build-arg TORCH_CPU_INDEX= .
#
# --ca FILE     a CA bundle to trust inside the image (a TLS-inspecting proxy's); pip is
#               pointed at it too
# --wheels DIR  wheels pip may install from (`find-links`): torch==2.13.0+cpu where
#               PyTorch's index cannot be reached (then pass TORCH_CPU_INDEX= as above)
# --mirror URL  the Debian mirror debootstrap reads (default: debootstrap's own)
# Needs root, debootstrap and a running Docker daemon.
set -euo pipefail

tag=${1:?usage: local-base.sh TAG [--ca FILE] [--wheels DIR] [--mirror URL]}
shift
ca="" wheels="" mirror=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ca) ca=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# shellcheck disable=SC2086 # an empty $mirror is no argument
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root/fs" $mirror
rm -rf "$root"/fs/var/cache/apt/archives/*.deb "$root"/fs/var/lib/apt/lists/*

pip_conf=""
if [ -n "$ca" ]; then
  cp "$ca" "$root/fs/etc/ssl/certs/ca-certificates.crt"
  pip_conf+="cert = /etc/ssl/certs/ca-certificates.crt"$'\n'
fi
if [ -n "$wheels" ]; then
  mkdir -p "$root/fs/opt/wheels"
  cp "$wheels"/*.whl "$root/fs/opt/wheels/"
  pip_conf+="find-links = /opt/wheels"$'\n'
fi
if [ -n "$pip_conf" ]; then
  printf '[global]\n%s' "$pip_conf" > "$root/fs/etc/pip.conf"
fi
tar -C "$root/fs" -c . | docker import - "$tag"
docker run --rm "$tag" python3 -c 'import sys, venv; print("ok", sys.version.split()[0])'
