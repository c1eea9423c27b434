#!/usr/bin/env bash
# Stops the appliance and removes its containers, networks and volumes (the cache too).
set -euo pipefail
cd "$(dirname "$0")"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-damselfly}"
[ -f .env ] || { echo "nothing to take down (no .env)"; exit 0; }
docker-compose down -v --remove-orphans
