#!/bin/sh
# Start the API: migrate the registry first unless a one-shot `migrate` service already did
# (FLAME_MIGRATE_ON_START=0, as in docker-compose.yml, so replicas never race on migrations).
set -e
if [ "${FLAME_MIGRATE_ON_START:-1}" = "1" ]; then
    alembic upgrade head
fi
exec flame serve --host 0.0.0.0 --port "${FLAME_PORT:-8000}" "$@"
