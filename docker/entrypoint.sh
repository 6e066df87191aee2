#!/bin/sh
# Container start: wait for the database, apply migrations (one instance at a
# time, under an advisory lock), then replace this shell with gunicorn.
set -eu

python manage.py wait_for_db --timeout "${DB_WAIT_SECONDS:-60}"
if [ "${MIGRATE_ON_START:-1}" = "1" ]; then
    python manage.py migrate_locked
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec gunicorn -c docker/gunicorn.conf.py
