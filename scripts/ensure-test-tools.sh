#!/usr/bin/env bash
# Installs the system tools the test suite runs for real, from Debian's
# packages, when they are missing: Prometheus and promtool (monitoring tests),
# docker-compose (compose file validation). A no-op when all are present.
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing test tools (${need[*]}); install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi

echo "installing test tools: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian starts no service in containers (policy-rc.d); the tests run their own.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
