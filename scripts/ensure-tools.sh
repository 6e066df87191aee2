#!/usr/bin/env bash
# Installs, from Debian's packages, the system tools a target runs for real,
# when they are missing; a no-op when all are present.
#   scripts/ensure-tools.sh test    Prometheus + promtool, docker-compose, valgrind
#   scripts/ensure-tools.sh bench   wrk, pgbench, valgrind
#   scripts/ensure-tools.sh faults  PostgreSQL's cluster tools and server, redis-server
#   scripts/ensure-tools.sh image   podman, debootstrap
set -euo pipefail

case "${1:-}" in
    test) wanted=("prometheus:prometheus" "promtool:prometheus" "docker-compose:docker-compose" "valgrind:valgrind") ;;
    bench)
        pg="postgresql-$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)"
        wanted=("wrk:wrk" "pgbench:${pg}" "valgrind:valgrind")
        ;;
    faults)
        pg="postgresql-$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)"
        [ "$pg" = "postgresql-" ] && pg=postgresql
        wanted=("pg_createcluster:postgresql-common" "pg_ctlcluster:${pg}" "redis-server:redis-server")
        ;;
    image) wanted=("podman:podman" "debootstrap:debootstrap") ;;
    *) echo "usage: $0 test|bench|faults|image" >&2; exit 2 ;;
esac

need=()
for pair in "${wanted[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ]; then
    echo "missing tools (${need[*]}); install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian starts no service in containers (policy-rc.d); the tests run their own.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
