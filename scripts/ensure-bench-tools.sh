#!/usr/bin/env bash
# Installs the load tools `make bench` drives, from Debian's packages, when
# they are missing: wrk (HTTP load on loopback) and pgbench (the database's
# own ceiling for a ledger post).
set -euo pipefail

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v pgbench >/dev/null 2>&1 || need+=("postgresql-$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)")

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing bench tools (${need[*]}); install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "installing bench tools: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
