#!/usr/bin/env bash
# The stand-in for python:3.11-slim-bookworm that docker/Dockerfile starts
# from, for machines without an image registry: Debian bookworm (its Python is
# 3.11) from Debian's packages with debootstrap, imported into podman under
# the name the Dockerfile uses. Built once; later runs find it in podman's store.
set -euo pipefail

IMAGE=docker.io/library/python:3.11-slim-bookworm
if podman image exists "$IMAGE"; then
    echo "base image present: $IMAGE"
    exit 0
fi
root=$(mktemp -d /var/tmp/ledger-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "building $IMAGE with debootstrap (a few minutes, once)"
timeout 900 debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root" >/dev/null
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
printf '[global]\nbreak-system-packages = true\n' > "$root/etc/pip.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
tar -C "$root" -c . | podman import - "$IMAGE" >/dev/null
echo "imported $IMAGE"
