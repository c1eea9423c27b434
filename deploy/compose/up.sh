#!/usr/bin/env bash
# Brings the appliance up: builds the images when missing, makes the tokens (once, kept in
# state/), starts every service and waits until all are healthy.
#   COMPOSE_PROJECT_NAME   project name (default damselfly)
#   DF_*_PORT              published ports on 127.0.0.1 (see docker-compose.yml)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-damselfly}"
if ! docker image inspect damselfly:latest >/dev/null 2>&1 || ! docker image inspect damselfly-services:bookworm >/dev/null 2>&1; then
  "$here/../docker/build.sh"
fi
mkdir -p state
chmod 0700 state
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if [ ! -f state/tokens.env ]; then
  umask 077
  {
    echo "DF_WARM_TOKEN=$(token)"
    echo "DF_WEBHOOK_TOKEN=$(token)"
    echo "DF_API_TOKEN=$(token)"
    echo "DF_HTTP_SECRET=$(token)"
  } >state/tokens.env
fi
# The region's CA and a certificate per daemon, made once by the image's own `edge-cache certs`
# (state/pki/ca/ca.key never leaves this directory). The edge and the preheater serve TLS; every
# agent presents its certificate to the edge, which gives task keys only to callers it can name.
# Owned by the daemons' uid, keys 0600.
if [ ! -f state/pki/ca/ca.crt ]; then
  rm -rf state/pki
  mkdir -p state/pki
  docker run --rm --user 0 --network none -v "$here/state/pki:/pki" --entrypoint /bin/sh damselfly:latest -c '
    set -e
    edge-cache certs init --dir /pki/ca --name "Damselfly appliance CA" >/dev/null
    issue() { name=$1; shift; edge-cache certs issue --ca /pki/ca --name "$name" --out /pki/tls "$@" >/dev/null; }
    issue edge --dns edge --dns localhost --ip 127.0.0.1
    issue preheater --dns preheater --dns localhost --ip 127.0.0.1
    for agent in agent-a1 agent-a2 agent-b1; do issue "$agent" --dns "$agent"; done
    chown -R 10001:10001 /pki
    chmod 0755 /pki /pki/ca /pki/tls
    chmod 0644 /pki/ca/ca.crt'
fi
# shellcheck disable=SC1091
. state/tokens.env
sed -e "s/@WEBHOOK_TOKEN@/$DF_WEBHOOK_TOKEN/" -e "s/@HTTP_SECRET@/$DF_HTTP_SECRET/" registry.yml.in >state/registry.yml
# The registry runs as root in its image; the file only needs to be readable by it.
chmod 0644 state/registry.yml
# docker-compose reads .env from the project directory: tokens plus any DF_* ports given.
{
  cat state/tokens.env
  env | grep -E '^DF_[A-Z0-9_]*(PORT|LIMIT)=' || true
} >.env
chmod 0600 .env
docker-compose up -d --quiet-pull 2>&1 | grep -v -e '^Creating' -e '^Starting' || true
services=(registry redis edge preheater agent-a1 agent-a2 agent-b1)
for _ in $(seq 1 60); do
  unhealthy=()
  for s in "${services[@]}"; do
    id=$(docker-compose ps -q "$s")
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo missing)
    [ "$state" = healthy ] || unhealthy+=("$s:$state")
  done
  if [ ${#unhealthy[@]} -eq 0 ]; then
    echo "appliance up: registry 127.0.0.1:${DF_REGISTRY_PORT:-15000}, edge :${DF_EDGE_PORT:-15080}, preheater :${DF_PREHEATER_PORT:-15070}, agents :${DF_AGENT_A1_PORT:-15091} :${DF_AGENT_A2_PORT:-15092} :${DF_AGENT_B1_PORT:-15093}"
    exit 0
  fi
  sleep 2
done
echo "not healthy after 120 s: ${unhealthy[*]}" >&2
docker-compose ps >&2
docker-compose logs --tail 30 >&2
exit 1
